"""Redis down is not an error page: with the cache's Redis stopped, signups (page,
embedded box, JSON), one-click unsubscribes, preference changes and requests for a
preferences link are accepted and stored; the per-client limit falls back to process memory with a warning; and the
confirmation emails go out once Redis is back. Against a private redis-server that
the test starts and stops, never the shared one."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time

import pytest
import redis
from django.utils import timezone

from alerts import sweeper
from alerts.models import ConsentRequest, OutboxEmail, Subscriber
from tests.factories import make_subscriber
from tests.helpers import (
    API,
    ONE_CLICK,
    PARTNER,
    REQUEST,
    SIGNUP,
    form_data,
    prefs_path,
    require_service,
    unsubscribe_path,
)

pytestmark = pytest.mark.django_db


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    def __init__(self, directory) -> None:
        self.port, self.directory, self.proc = free_port(), directory, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def private_redis(settings, tmp_path):
    require_service(shutil.which("redis-server") is not None, "redis-server")
    server = PrivateRedis(tmp_path)
    server.start()
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": server.url}}
    yield server
    server.stop()


def test_with_redis_down_every_form_is_accepted_and_its_emails_go_out_when_it_returns(
        client, private_redis, settings, mailoutbox, caplog, django_capture_on_commit_callbacks):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.EMBED_FRAME_ANCESTORS = [PARTNER]
    reader = make_subscriber("reader@example.com")
    leaver = make_subscriber("leaver@example.com")
    private_redis.stop()
    with caplog.at_level(logging.WARNING), django_capture_on_commit_callbacks(execute=True):
        answers = [
            client.post(SIGNUP, {"email": "page@example.com"}, REMOTE_ADDR="203.0.113.1"),
            client.post("/embed/", {"email": "embed@example.com"}, REMOTE_ADDR="203.0.113.2",
                        HTTP_ORIGIN="http://testserver"),
            client.post(API, '{"email": "json@example.com"}', content_type="application/json",
                        REMOTE_ADDR="203.0.113.3"),
            client.post(unsubscribe_path(leaver), "List-Unsubscribe=One-Click",
                        content_type="application/x-www-form-urlencoded", **{f"HTTP_{k.upper()}": v
                                                                              for k, v in ONE_CLICK.items()}),
            client.post(prefs_path(reader), form_data(marketing="on"), REMOTE_ADDR="203.0.113.4"),
            client.post(REQUEST, {"email": "reader@example.com"}, REMOTE_ADDR="203.0.113.5"),  # "email me my link"
        ]
    assert [answer.status_code for answer in answers] == [200] * 6
    assert "Rate limits counted in process memory" in caplog.text
    assert ConsentRequest.objects.filter(processed_at__isnull=True).count() == 4  # 3 signups, 1 marketing tick
    assert Subscriber.objects.get(email="leaver@example.com").status == Subscriber.Status.UNSUBSCRIBED
    assert mailoutbox == []

    private_redis.start()
    later = timezone.now() + timezone.timedelta(seconds=10)
    sweeper.sweep(now=later)  # the drain, which records the emails
    sweeper.sweep(now=later)  # the sender (nudged too, but its nudge waits for the test's commit)
    assert sorted(m.to[0] for m in mailoutbox) == [
        "embed@example.com", "json@example.com", "page@example.com", "reader@example.com", "reader@example.com"]
    assert set(OutboxEmail.objects.values_list("status", flat=True)) == {"sent"}


def test_with_redis_down_the_per_client_limit_still_holds_in_process_memory(client, private_redis, settings):
    settings.SIGNUP_RATE_PER_IP = "2/h"
    private_redis.stop()
    codes = [client.post(API, f'{{"email": "r{i}@example.com"}}', content_type="application/json",
                         REMOTE_ADDR="198.51.100.7").status_code for i in range(3)]
    assert codes == [200, 200, 429]
    assert ConsentRequest.objects.count() == 2


@pytest.mark.worker
def test_a_worker_that_loses_redis_with_a_task_in_hand_carries_on_when_it_returns(
        transactional_db, fake_mailgun, tmp_path):
    """kombu's Redis transport, on a lost connection, tries to put the messages the
    worker holds back into the Redis it has lost, and the worker used to die of it
    (config/broker.py). Here the broker is a private Redis, stopped while the worker
    runs a signup drain (which waits half a second as it starts), then started again:
    the same worker, still alive, drains the signups made meanwhile."""
    from alerts.common.consent import RequestMeta
    from alerts.signup.services import DRAIN_TASK, signup_request
    from tests.helpers import Worker, worker_env

    require_service(shutil.which("redis-server") is not None, "redis-server")
    broker = PrivateRedis(tmp_path)
    broker.start()
    worker = Worker(worker_env(fake_mailgun, CELERY_BROKER_URL=broker.url,
                               CACHE_REDIS_URL=broker.url.replace("/0", "/1")), tmp_path / "worker.log").start()
    from celery import current_app

    def queue_drain() -> None:
        with current_app.connection_for_write(broker.url) as connection:
            current_app.send_task(DRAIN_TASK, connection=connection)

    try:
        signup_request(email="before@example.com", marketing=False, source="api", meta=RequestMeta(ip="203.0.113.9"),
                       drain_nudge=False)
        queue_drain()
        time.sleep(0.2)  # the drain has started its half-second wait
        broker.stop()
        signup_request(email="during@example.com", marketing=False, source="api", meta=RequestMeta(ip="203.0.113.9"),
                       drain_nudge=False)
        time.sleep(2)
        broker.start()
        assert worker.proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        deadline = time.monotonic() + 30
        while ConsentRequest.objects.filter(processed_at__isnull=True).exists() and time.monotonic() < deadline:
            queue_drain()
            time.sleep(1)
        assert not ConsentRequest.objects.filter(processed_at__isnull=True).exists()
        assert worker.proc.poll() is None
    finally:
        worker.stop()
        broker.stop()
