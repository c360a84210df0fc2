"""Logs: LOG_FORMAT=json gives one JSON object per line, with the alert and task ids
of the work a line is about; Celery's routine lines about the sweep are left out."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from alerts.models import Alert, Subscriber, Topic
from alerts.observability import logcontext
from alerts.publishing.services import alert_publish
from config.logging import JsonFormatter, QuietTicks, logging_config
from tests.factories import make_subscriber
from tests.helpers import ROOT, Worker, wait_until, worker_env


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    return parsed


def test_a_management_command_logs_json_lines_with_the_bound_ids():
    code = (
        "import django, logging; django.setup(); "
        "from alerts.observability import logcontext; "
        "logcontext.bind(alert_id=7, batch_id=70, task_id='t-1'); "
        "logging.getLogger('alerts.test').warning('Batch %s of alert %s', 70, 7); "
        "logcontext.clear(); logging.getLogger('alerts.test').info('no ids here'); "
        "import warnings; logging.captureWarnings(True); warnings.warn('a warning')"
    )
    env = {"DJANGO_SETTINGS_MODULE": "config.test_settings", "LOG_FORMAT": "json", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    first, second, warned = json_lines(out.stderr + out.stdout)
    assert first["message"] == "Batch 70 of alert 7" and first["level"] == "WARNING"
    assert (first["alert_id"], first["batch_id"], first["task_id"]) == (7, 70, "t-1")
    assert second["message"] == "no ids here" and "alert_id" not in second
    assert "a warning" in warned["message"]


@pytest.mark.worker
def test_a_worker_with_json_logs_prints_only_json_lines_naming_the_alert(
        transactional_db, fake_mailgun, broker_redis, tmp_path):
    broker_redis.flushdb()
    fake_mailgun.reset()
    for i in range(3):
        make_subscriber(f"reader{i}@example.com")
    env = worker_env(fake_mailgun, LOG_FORMAT="json")
    worker = Worker(env, tmp_path / "worker.log", celery_args=["--quiet"]).start()
    try:
        alert = Alert.objects.create(headline="Bridge closed", standfirst="High winds")
        alert.topics.set([Topic.objects.create(name="Local", slug="local")])
        alert_publish(alert_id=alert.pk)
        wait_until(lambda: Alert.objects.get(pk=alert.pk).status == Alert.Status.SENT, timeout=60)
        assert Subscriber.objects.count() == 3
    finally:
        worker.stop()
    # Every log record is a JSON line. Celery writes its shutdown notices ("worker: Warm
    # shutdown") straight to the file descriptor, outside logging: `make run` wraps
    # those (config/json_lines.py, tested below).
    text = (tmp_path / "worker.log").read_text()
    lines = json_lines("\n".join(line for line in text.splitlines() if not line.startswith("worker: ")))
    cut = [line for line in lines if "cut" in line["message"] and line.get("alert_id") == alert.pk]
    assert cut and cut[0]["task"] == "alerts.fan_out_alert" and cut[0]["task_id"]
    assert any(line["message"].endswith("ready.") for line in lines)


def record(name: str, message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_celerys_routine_lines_about_the_sweep_are_left_out():
    quiet = QuietTicks()
    assert not quiet.filter(record("celery.app.trace", "Task alerts.sweep_sends[ab] succeeded in 0.01s: None"))
    assert not quiet.filter(record("celery.beat", "Scheduler: Sending due task sweep-sends (alerts.sweep_sends)"))
    assert quiet.filter(record("celery.app.trace", "Task alerts.send_batch[cd] succeeded in 0.2s: None"))
    assert quiet.filter(record("celery.app.trace", "Task alerts.sweep_sends[ef] raised", logging.ERROR))
    assert quiet.filter(record("alerts.sweeper", "Sweep: published 1, re-queued 0 fan-outs"))


def test_the_json_formatter_leaves_out_ids_that_do_not_apply():
    line = record("alerts.x", "hello")
    logcontext.clear()
    logcontext.ContextFilter().filter(line)
    parsed = json.loads(JsonFormatter("%(message)s").format(line))
    assert parsed == {"message": "hello"}


def test_an_unknown_log_format_is_refused():
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        logging_config(log_format="xml")


@pytest.mark.worker
def test_make_run_with_json_logs_prints_only_json_lines(transactional_db, broker_redis, tmp_path):
    """scripts/run-dev, as `LOG_FORMAT=json make run` starts it: web, worker and beat."""
    import os
    import signal
    import socket

    import requests
    from django.conf import settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = settings.DATABASES["default"]
    env = {**os.environ, "LOG_FORMAT": "json", "ALLOWED_HOSTS": "127.0.0.1,localhost", "SITE_URL": "", "PORT": str(port), "DJANGO_SETTINGS_MODULE": "config.settings",
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "scripts/run-dev"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def started() -> bool:
            text = log.read_bytes()
            assert proc.poll() is None, text.decode()[-3000:]
            return b"ready." in text and b"Starting development server" in text
        wait_until(started, timeout=90, interval=0.5)
        assert requests.get(f"http://127.0.0.1:{port}/healthz/live", timeout=10).status_code == 200
        wait_until(lambda: b"/healthz/live" in log.read_bytes(), timeout=10)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=60)
    lines = json_lines(log.read_text())
    assert any(line.get("logger") == "django.server" and "/healthz/live" in line["message"] for line in lines)
    assert not any("sweep" in line["message"] for line in lines if line.get("logger", "").startswith("celery"))
