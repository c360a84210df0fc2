"""What-if settings for the benchmark only: config.settings plus persistent database
connections in Celery workers.

Celery 5.7's Django fix-up closes every database connection before and after each
task unless CELERY_DB_REUSE_MAX is set, so each batch opens a new PostgreSQL backend.
Compare:

    .venv/bin/python bench/fanout.py --runs 3
    .venv/bin/python bench/fanout.py --runs 3 --settings bench.settings_db_reuse
"""

from __future__ import annotations

from config.settings import *  # noqa: F403

# Close (and reopen) the connections every 1,000 tasks instead of every task.
CELERY_DB_REUSE_MAX = 1000
