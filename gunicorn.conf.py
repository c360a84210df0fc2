"""gunicorn as shipped, for the web app (`gunicorn -c gunicorn.conf.py config.wsgi`).

The workload: the signup endpoint under a breaking-news spike, hundreds of short
requests a second, each about a millisecond of Python (validate, count the client's
limit in Redis, one INSERT) and a few sub-millisecond round trips to PostgreSQL and
Redis on the same network. Nothing waits long on I/O, so the CPU is the limit:

- One process per core is what Python's GIL allows to run at once; a couple more
  keep the cores busy while some processes wait on their round trips, and one more
  than that only adds context switches and memory. WEB_CONCURRENCY, default
  2 x cores + 1 (5 on this project's 2-core machine), as gunicorn's docs advise for
  sync workers, measured against the alternatives by bench/signup.py (see README).
- Sync workers: one request at a time per process, no keep-alive. The newsroom's
  load balancer or CDN holds the readers' connections; behind it a thread pool
  would buy no parallelism (the GIL) and threaded workers measured no faster here.
  GUNICORN_WORKER_CLASS=gthread with GUNICORN_THREADS>1 is there for deployments
  whose clients connect directly and want keep-alive.
- The app is loaded once before forking (preload_app): workers start in
  milliseconds and share the imported code's memory. Nothing connects to
  PostgreSQL or Redis at import, so no connection is shared across the fork.
- Workers are recycled after about 10,000 requests (jittered, so not all at once),
  which bounds any slow leak in a long spike; a request past `timeout` (30 s) is
  killed rather than left holding a worker.
- The loaded app's objects are frozen out of the garbage collector before each fork
  (`pre_fork`): a request allocates enough to set off a full collection every few
  hundred requests, and each one walked the whole imported heap again. Frozen, it
  also stays shared between the workers instead of being copied as the collector
  touches it (as the Celery worker does, config/celery.py).
- Logs as the app does (config/logging.py: LOG_FORMAT, LOG_LEVEL), and tells the
  Prometheus client when a worker exits (`child_exit`), so that its live values are
  dropped from /metrics in multiprocess mode (PROMETHEUS_MULTIPROC_DIR).

Production: `gunicorn -c gunicorn.conf.py config.wsgi` (README, "Running in production").
"""

from __future__ import annotations

import gc
import multiprocessing
import os

from config.logging import logging_config

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count() + 1))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# A spike arrives in bursts: a deep accept queue holds them rather than refusing them.
backlog = 2048
preload_app = True
max_requests = 10_000
max_requests_jitter = 1_000
timeout = 30
graceful_timeout = 30
keepalive = 5  # seconds; used by gthread workers only (sync workers close each connection)
# Logs go to stderr for the platform to collect; access logs are off by default (one
# line a signup at spike rates), GUNICORN_ACCESS_LOG=- turns them on.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
logconfig_dict = logging_config(log_format=os.environ.get("LOG_FORMAT", "plain"),
                                level=os.environ.get("LOG_LEVEL", "INFO"))


def pre_fork(server, worker) -> None:
    gc.freeze()


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
