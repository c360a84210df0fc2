"""gunicorn settings for production: `gunicorn -c config/gunicorn.py config.wsgi`.

Logs as the app does (config/logging.py: LOG_FORMAT, LOG_LEVEL), and tells the
Prometheus client when a worker process exits, so that its live values are dropped
from /metrics in multiprocess mode (PROMETHEUS_MULTIPROC_DIR).
"""

from __future__ import annotations

import os

from config.logging import logging_config

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
accesslog = "-"
logconfig_dict = logging_config(log_format=os.environ.get("LOG_FORMAT", "plain"),
                                level=os.environ.get("LOG_LEVEL", "INFO"))


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
