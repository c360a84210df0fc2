from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# gunicorn runs no system checks: refuse to serve with a security error (DEBUG on a
# public host, unauthenticated webhooks) as runserver and migrate refuse to run.
from alerts.checks import refuse_to_start_on_security_errors  # noqa: E402

refuse_to_start_on_security_errors()
