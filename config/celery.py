"""The Celery app: queues, routing and the beat schedule.

Three queues, so that a breaking alert never waits behind anything else:

- ``alerts``: fan-out and batch sends of breaking alerts. Production runs a worker
  that consumes only this queue (``celery -A config worker -Q alerts``).
- ``transactional``: confirmation and preference-link emails, small and urgent.
- ``digests``: scheduled digests and housekeeping, which may take their time.
- ``sweeps``: the recovery sweep, every few seconds, so that it never queues behind
  the batches it is there to rescue.
- ``webhooks``: outgoing webhooks to the newsroom's own systems, so that a slow or dead
  receiver never holds up anything else.

The Redis ``visibility_timeout`` (settings.CELERY_VISIBILITY_TIMEOUT, 15 minutes) is
how long an unacknowledged task stays hidden before Redis hands it to another worker.
With late acknowledgement that is the delay before a SIGKILLed worker's batch is
retried, so it is short enough to recover quickly and more than twice the hard task
time limit, so a slow but live task is never run twice. We never use countdowns or
ETAs longer than half of it: Redis would redeliver them early and they would run twice.
"""

from __future__ import annotations

import gc
import logging
import os
from functools import partial

from celery import Celery
from celery.schedules import crontab
from celery.signals import task_prerun, worker_init, worker_process_init
from celery.worker.consumer import Consumer
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")

# Each queue has its own exchange and routing key. Left unset, Celery binds every queue
# to the default exchange and key, and a message for one queue lands in all three.
app.conf.task_queues = tuple(
    Queue(name, Exchange(name, type="direct"), routing_key=name)
    for name in ("alerts", "transactional", "digests", "sweeps", "webhooks")
)
app.conf.task_default_queue = "transactional"
app.conf.task_routes = {
    "alerts.fan_out_alert": {"queue": "alerts"},
    "alerts.send_batch": {"queue": "alerts"},
    "alerts.sweep_sends": {"queue": "sweeps"},
    "alerts.send_confirmation": {"queue": "transactional"},
    "alerts.send_preferences_link": {"queue": "transactional"},
    "alerts.process_consent_request": {"queue": "transactional"},
    "alerts.send_request_confirmation": {"queue": "transactional"},
    "alerts.send_data_link": {"queue": "transactional"},
    "alerts.drain_consent_requests": {"queue": "transactional"},
    "alerts.send_outbox": {"queue": "transactional"},
    "alerts.send_digest_batch": {"queue": "digests"},
    "alerts.send_digests": {"queue": "digests"},
    "alerts.purge_unconfirmed": {"queue": "digests"},
    "alerts.purge_old_deliveries": {"queue": "digests"},
    "alerts.purge_idempotency_keys": {"queue": "digests"},
    "alerts.deliver_webhook": {"queue": "webhooks"},
    "alerts.sweep_webhooks": {"queue": "webhooks"},
    "alerts.purge_webhook_messages": {"queue": "digests"},
    "alerts.check_deliverability": {"queue": "digests"},
    "alerts.reengage_readers": {"queue": "digests"},
}
SWEEP_EVERY = 5.0  # seconds
# One schedule for all periodic work. Every task here is idempotent, so a second beat
# process or a doubled tick is harmless.
app.conf.beat_schedule = {
    # On a queue of its own, so that it never waits behind a million readers' batches,
    # and expiring with its interval: a sweep that could not start in time is dropped,
    # never run in a burst with the ones after it.
    "sweep-sends": {"task": "alerts.sweep_sends", "schedule": SWEEP_EVERY,
                    "options": {"queue": "sweeps", "expires": SWEEP_EVERY}},
    # Every minute, so each time zone's digest leaves within a minute of its hour.
    "send-digests": {"task": "alerts.send_digests", "schedule": 60.0, "options": {"queue": "digests"}},
    # Retention, daily and off-peak; both work in chunks and are safe to re-run.
    "purge-unconfirmed": {"task": "alerts.purge_unconfirmed", "schedule": crontab(hour=3, minute=17),
                          "options": {"queue": "digests"}},
    "purge-old-deliveries": {"task": "alerts.purge_old_deliveries", "schedule": crontab(hour=3, minute=47),
                             "options": {"queue": "digests"}},
    # Outgoing webhooks due a retry, on their own queue like their deliveries, so a dead
    # receiver's backlog never delays a send or a digest.
    "sweep-webhooks": {"task": "alerts.sweep_webhooks", "schedule": SWEEP_EVERY,
                       "options": {"queue": "webhooks", "expires": SWEEP_EVERY}},
    "purge-idempotency-keys": {"task": "alerts.purge_idempotency_keys", "schedule": crontab(hour=4, minute=7),
                               "options": {"queue": "digests"}},
    "purge-webhook-messages": {"task": "alerts.purge_webhook_messages", "schedule": crontab(hour=4, minute=17),
                               "options": {"queue": "digests"}},
    # Observability: the operator's log says so while spam complaints are too high.
    "check-deliverability": {"task": "alerts.check_deliverability", "schedule": 600.0,
                             "options": {"queue": "digests", "expires": 600.0}},
    # "Still want these?" for readers who open nothing (off unless REENGAGE_AFTER_MONTHS).
    "reengage-readers": {"task": "alerts.reengage_readers", "schedule": crontab(hour=5, minute=23),
                         "options": {"queue": "digests"}},
}

app.autodiscover_tasks()

# Seconds between a worker's attempts to reach a lost broker. Celery's consumer waits
# 2, 4, 6, ... up to 30 s between attempts, so after a minute without Redis a worker
# could sit out another 16-30 s after Redis returns, while readers wait for their
# confirmation emails; one attempt a second costs nothing.
BROKER_RECONNECT_EVERY = 1.0


class QuickReconnectConsumer(Consumer):
    """Celery's consumer, retrying a lost broker every BROKER_RECONNECT_EVERY seconds
    (and, with broker_connection_max_retries=None in settings, for ever: a worker
    that gives up during a long outage would need a human to start it again)."""

    def ensure_connected(self, conn):
        conn.ensure_connection = partial(conn.ensure_connection, interval_start=BROKER_RECONNECT_EVERY,
                                         interval_step=0, interval_max=BROKER_RECONNECT_EVERY)
        return super().ensure_connected(conn)


app.conf.worker_consumer = "config.celery:QuickReconnectConsumer"


@task_prerun.connect
def _drop_unusable_connections(task=None, **kwargs) -> None:
    """With connections reused across tasks (CELERY_DB_REUSE_MAX), close one that broke
    or outlived CONN_MAX_AGE before the task runs, as Django does between requests.
    Eager tasks run inside the caller's transaction and must not touch it."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@worker_init.connect
def _preload(**kwargs) -> None:
    """Before the pool forks: so that no pool process pays for building the URL
    resolver and loading the email templates while it sends its first batch (about
    15 ms off the first hand-off after a start). A warm-up must never stop a worker."""
    try:
        import django

        django.setup()  # idempotent; Celery's Django fixup may not have run it yet
        from alerts.emails import preload
        from alerts.sending.provider import preload_backends

        preload()
        preload_backends()
    except Exception:  # noqa: BLE001
        logging.getLogger(__name__).exception("Preloading before the pool forks failed; carrying on")
    # Everything loaded so far (Django, anymail, requests, the templates: a few hundred
    # thousand objects) lives as long as the process. Frozen, the garbage collector's
    # full collections skip it: a 1,000-reader batch creates enough objects to trigger
    # one every few batches, and walking the whole heap each time was about 40% of a
    # SendGrid batch's CPU. Frozen before the fork, it also stays shared with the pool.
    gc.freeze()


@worker_process_init.connect
def _keep_leases(**kwargs) -> None:
    """In each worker process: renew the leases of the batches it sends from a
    heartbeat thread, so that a live send is never taken over, however slow."""
    from alerts.sending.batches import keeper

    keeper.start()
