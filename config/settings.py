"""Stop Press settings.

Everything an operator changes comes from the environment (12-factor). Defaults are
safe for production (DEBUG off, secure cookies, HSTS); `make run` switches on the
development mode explicitly with DEBUG=1.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from .logging import logging_config
from .sentry import init_sentry

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG: bool = env.bool("DEBUG", default=False)

SECRET_KEY: str = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set SECRET_KEY (or DEBUG=1 for local development).")
    SECRET_KEY = "dev-only-insecure-key-" + "x" * 40
# Old keys keep already-mailed unsubscribe and preference links working after rotation.
SECRET_KEY_FALLBACKS: list[str] = env.list("SECRET_KEY_FALLBACKS", default=[])

ALLOWED_HOSTS: list[str] = env.list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1"] if DEBUG else []
)
# Absolute base for links in emails, e.g. https://news.example.com
SITE_URL: str = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "csp",
    "anymail",
    "ninja",  # the publishing API's docs page, with its Swagger UI served from our own static files
    "alerts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Every error under /api/v1/ is application/problem+json, even Django's own 404 and 500.
    "alerts.api.problems.ProblemMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_ratelimit.middleware.RatelimitMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "alerts.common.context_processors.publication",
                "alerts.observability.context_processors.deliverability",
            ],
        },
    },
]

# --- Data stores -------------------------------------------------------------------
# SQLite is the zero-setup default; production and the test suite use PostgreSQL.
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL: str = env.str("REDIS_URL", default="redis://127.0.0.1:6379").rstrip("/")
# The broker uses Redis database 0; rate-limit counters and the cache use database 1,
# so flushing or evicting cache keys can never touch queued tasks.
_redis_base = REDIS_URL.rsplit("/", 1)[0] if REDIS_URL.count("/") > 2 else REDIS_URL
CACHE_REDIS_URL: str = env.str("CACHE_REDIS_URL", default=f"{_redis_base}/1")
CACHES = {
    "default": {
        # Django's, keeping its redis-py clients (alerts/common/redis_cache.py).
        "BACKEND": "alerts.common.redis_cache.RedisCache",
        "LOCATION": CACHE_REDIS_URL,
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="stoppress"),
        # Seconds. redis-py waits forever by default: with a Redis that hangs rather
        # than refuses, every signup would hang with it. A local Redis answers in well
        # under a millisecond; past these, the rate limits fall back to process
        # memory and the drain is left to the sweeper (see alerts/common/).
        "OPTIONS": {
            "socket_connect_timeout": env.float("CACHE_CONNECT_TIMEOUT", default=0.5),
            "socket_timeout": env.float("CACHE_TIMEOUT", default=0.5),
        },
    }
}

# --- Auth, i18n, static ------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Proxies ---------------------------------------------------------------------
def _trusted_proxies(value: str) -> int | list[str]:
    """TRUSTED_PROXIES: how many reverse proxies stand in front of the app (e.g. 1 for
    one load balancer), or their networks, comma-separated (10.0.0.0/8,fd00::/8).
    0, the default, means none: REMOTE_ADDR is the reader and X-Forwarded-For and
    X-Forwarded-Proto are ignored, since anyone can send them."""
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        return [str(ipaddress.ip_network(part.strip(), strict=False)) for part in value.split(",")]
    except ValueError:
        raise ImproperlyConfigured(
            f"TRUSTED_PROXIES must be a number of proxies or a list of networks, not {value!r}."
        ) from None


TRUSTED_PROXIES: int | list[str] = _trusted_proxies(env.str("TRUSTED_PROXIES", default="0"))
if env.str("RATELIMIT_IP_META_KEY", default=""):
    raise ImproperlyConfigured(
        "RATELIMIT_IP_META_KEY is replaced by TRUSTED_PROXIES (the number of proxies in front, "
        "or their networks), which the rate limits and the consent records both follow."
    )

# --- Security: on by default, relaxed only by DEBUG -------------------------------
# Only a proxy of ours may tell us the reader's connection was https; without one the
# header is the client's own word.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if TRUSTED_PROXIES else None
SECURE_SSL_REDIRECT: bool = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# Load balancers probe the health endpoint over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz/(live|ready)?$"]
SECURE_HSTS_SECONDS: int = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS: bool = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD: bool = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Preloading HSTS binds every subdomain of the newsroom's domain for months; that is the
# newsroom's decision (SECURE_HSTS_PRELOAD=1), not a default we can make for them.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SESSION_COOKIE_SECURE: bool = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE: bool = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"  # the embeddable form view opts out explicitly
# Content-Security-Policy on every page (django-csp): scripts, styles and everything
# else from our own origin only, no inline script or style, nothing may frame us. The
# embeddable form widens frame-ancestors to EMBED_FRAME_ANCESTORS, and the admin's
# email preview has a sandboxed policy of its own.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "frame-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# Embedded signup forms: only these origins may call the JSON endpoint from a browser.
CORS_ALLOWED_ORIGINS: list[str] = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/api/.*$"
# Origins allowed to put the signup form in an iframe (Content-Security-Policy frame-ancestors).
EMBED_FRAME_ANCESTORS: list[str] = env.list("EMBED_FRAME_ANCESTORS", default=[])

# --- Email -------------------------------------------------------------------------
EMAIL_BACKEND: str = env.str(
    "EMAIL_BACKEND",
    default=(
        "alerts.dev.mail_backend.EmlFileBackend"
        if DEBUG
        else "django.core.mail.backends.smtp.EmailBackend"
    ),
)
EMAIL_FILE_PATH: str = env.str("EMAIL_FILE_PATH", default=str(BASE_DIR / "var" / "mail"))
EMAIL_HOST: str = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT: int = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER: str = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD: str = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS: bool = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT: int = env.int("EMAIL_TIMEOUT", default=30)
DEFAULT_FROM_EMAIL: str = env.str("DEFAULT_FROM_EMAIL", default="Breaking News <news@localhost>")
SERVER_EMAIL: str = env.str("SERVER_EMAIL", default=DEFAULT_FROM_EMAIL)

ANYMAIL = {
    "MAILGUN_API_KEY": env.str("MAILGUN_API_KEY", default=""),
    "MAILGUN_SENDER_DOMAIN": env.str("MAILGUN_SENDER_DOMAIN", default=""),
    "MAILGUN_API_URL": env.str("MAILGUN_API_URL", default="https://api.mailgun.net/v3"),
    "MAILGUN_WEBHOOK_SIGNING_KEY": env.str("MAILGUN_WEBHOOK_SIGNING_KEY", default=""),
    "SENDGRID_API_KEY": env.str("SENDGRID_API_KEY", default=""),
    "POSTMARK_SERVER_TOKEN": env.str("POSTMARK_SERVER_TOKEN", default=""),
    "WEBHOOK_SECRET": env.list("ANYMAIL_WEBHOOK_SECRET", default=[]),
    "REQUESTS_TIMEOUT": env.float("ANYMAIL_REQUESTS_TIMEOUT", default=30.0),
}

# --- Email providers ---------------------------------------------------------------
# Every anymail provider's credentials and options, under the names anymail's docs use
# (https://anymail.dev/en/stable/esps/). Only those set in the environment are passed,
# so anymail's own defaults (API URLs, regions) apply to the rest.
_ANYMAIL_STRINGS = (
    "SENDGRID_API_URL", "SENDGRID_MERGE_FIELD_FORMAT", "POSTMARK_API_URL", "POSTMARK_MESSAGE_STREAM",
    "MAILJET_API_KEY", "MAILJET_SECRET_KEY", "MAILJET_API_URL",
    "MANDRILL_API_KEY", "MANDRILL_API_URL", "MANDRILL_WEBHOOK_KEY", "MANDRILL_WEBHOOK_URL",
    "SPARKPOST_API_KEY", "SPARKPOST_API_URL", "SPARKPOST_SUBACCOUNT", "SPARKPOST_TRACK_INITIAL_OPEN_AS_OPENED",
    "BREVO_API_KEY", "BREVO_API_URL", "UNISENDER_GO_API_KEY", "UNISENDER_GO_API_URL",
    "RESEND_API_KEY", "RESEND_API_URL", "RESEND_SIGNING_SECRET",
    "POSTAL_API_KEY", "POSTAL_API_URL", "POSTAL_WEBHOOK_KEY",
    "MAILERSEND_API_TOKEN", "MAILERSEND_API_URL", "MAILERSEND_SIGNING_SECRET", "MAILERSEND_BATCH_SEND_MODE",
    "SCALEWAY_SECRET_KEY", "SCALEWAY_PROJECT_ID", "SCALEWAY_REGION", "SCALEWAY_API_URL",
    "MAILTRAP_API_TOKEN", "MAILTRAP_API_URL", "MAILTRAP_SANDBOX_ID",
    "AMAZON_SES_CONFIGURATION_SET_NAME", "AMAZON_SES_MESSAGE_TAG_NAME",
)
_ANYMAIL_BOOLS = ("POSTMARK_USE_BULK_API", "SENDGRID_GENERATE_MESSAGE_ID", "UNISENDER_GO_GENERATE_MESSAGE_ID",
                  "AMAZON_SES_AUTO_CONFIRM_SNS_SUBSCRIPTIONS")
ANYMAIL.update({name: env.str(name) for name in _ANYMAIL_STRINGS if name in os.environ})
ANYMAIL.update({name: env.bool(name) for name in _ANYMAIL_BOOLS if name in os.environ})
if "AMAZON_SES_CLIENT_PARAMS" in os.environ:
    # JSON, e.g. {"region_name": "eu-west-1"}; the keys come from boto3's usual
    # environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or the instance role.
    ANYMAIL["AMAZON_SES_CLIENT_PARAMS"] = env.json("AMAZON_SES_CLIENT_PARAMS")
# A second provider for when the first fails (any backend EMAIL_BACKEND takes; its
# credentials are in ANYMAIL like the first's). Empty: no failover.
EMAIL_BACKEND_FALLBACK: str = env.str("EMAIL_BACKEND_FALLBACK", default="")
# --- Failover to EMAIL_BACKEND_FALLBACK ---
# An alert goes over to the fallback once the primary has been failing (5xx, timeouts,
# network errors, with no call getting through) this long. 5 s: a blip shorter than that
# is ridden out by the usual retries, and a breaking alert's readers wait no longer than
# that for an outage to be called one (going over early costs nothing but the
# fallback's price: each reader is still sent once).
FAILOVER_AFTER_SECONDS: float = env.float("FAILOVER_AFTER_SECONDS", default=5.0)
# 429s mean the primary is up and we are faster than the account allows: the send-rate
# limit slows us down first, and only 429s with nothing getting through for this long
# (far past any rate limit's window) count as the primary failing.
FAILOVER_AFTER_RATE_LIMITED_SECONDS: float = env.float("FAILOVER_AFTER_RATE_LIMITED_SECONDS", default=120.0)
if EMAIL_BACKEND_FALLBACK and EMAIL_BACKEND_FALLBACK == EMAIL_BACKEND:
    # Both would read the same ANYMAIL credentials: the same account, no failover at all.
    raise ImproperlyConfigured("EMAIL_BACKEND_FALLBACK must be another provider than EMAIL_BACKEND.")
# Connections each worker process keeps open, and sends over at once, for SMTP and
# providers sent one message per call: each message waits a round trip, so a few in
# parallel hide the waits without crowding the server.
EMAIL_CONNECTIONS: int = env.int("EMAIL_CONNECTIONS", default=4)
# The provider account's sending limit, in recipients a second, shared by every worker
# (a token bucket in Redis): one number for any provider, or per provider by anymail
# name, e.g. "mailgun=500,amazon ses=14,smtp=3000". 0, the default: no limit of ours,
# since only the newsroom knows its account's.
_send_rate = env.str("EMAIL_SEND_RATE", default="0")
EMAIL_SEND_RATE: float | dict[str, float] = (
    {name.strip().lower(): float(rate) for name, rate in (item.split("=", 1) for item in _send_rate.split(","))}
    if "=" in _send_rate else float(_send_rate)
)

# --- The publication ---------------------------------------------------------------
PUBLICATION_NAME: str = env.str("PUBLICATION_NAME", default="The Daily Courier")
PUBLICATION_URL: str = env.str("PUBLICATION_URL", default=SITE_URL)
PRIVACY_NOTICE_VERSION: str = env.str("PRIVACY_NOTICE_VERSION", default="2026-01")
PRIVACY_NOTICE_TEXT: str = env.str(
    "PRIVACY_NOTICE_TEXT",
    default=(
        "We use your email address only to send you the emails you asked for. "
        "We keep a record of when and how you signed up, as the law requires. "
        "Every email has a link to unsubscribe or change your preferences, "
        "and you can ask us to send you or erase all we hold about you."
    ),
)
# Where the reader's local time is unknown, digests follow the newsroom's clock.
PUBLICATION_TIME_ZONE: str = env.str("PUBLICATION_TIME_ZONE", default="Europe/London")

# --- Signup policy -----------------------------------------------------------------
DOUBLE_OPT_IN: bool = env.bool("DOUBLE_OPT_IN", default=True)
CONFIRM_TOKEN_MAX_AGE: int = env.int("CONFIRM_TOKEN_MAX_AGE", default=48 * 3600)
# The unsubscribe and preference links in alerts and digests (unsubscribing never
# expires); the single-use links to download or erase one's data, emailed on request.
SUBSCRIBER_LINK_MAX_AGE: int = env.int("SUBSCRIBER_LINK_MAX_AGE", default=400 * 24 * 3600)
DATA_LINK_MAX_AGE: int = env.int("DATA_LINK_MAX_AGE", default=3600)
if not 60 <= DATA_LINK_MAX_AGE <= 3600:
    raise ImproperlyConfigured("DATA_LINK_MAX_AGE must be between 60 and 3600 seconds.")
EMAIL_CHECK_DELIVERABILITY: bool = env.bool("EMAIL_CHECK_DELIVERABILITY", default=False)
# Per-address confirmation cooldown (REFERENCE: 1 per 10 minutes, 3 per 24 hours).
CONFIRM_COOLDOWN_SECONDS: int = env.int("CONFIRM_COOLDOWN_SECONDS", default=600)
CONFIRM_DAILY_LIMIT: int = env.int("CONFIRM_DAILY_LIMIT", default=3)
SIGNUP_RATE_PER_IP: str = env.str("SIGNUP_RATE_PER_IP", default="10/h")
# "full" keeps IP and user agent with each consent event; "truncated" keeps the
# network part of the IP only; "none" keeps neither.
CONSENT_NETWORK_DATA: str = env.str("CONSENT_NETWORK_DATA", default="full")
if CONSENT_NETWORK_DATA not in {"full", "truncated", "none"}:
    raise ImproperlyConfigured("CONSENT_NETWORK_DATA must be full, truncated or none.")
UNCONFIRMED_RETENTION_DAYS: int = env.int("UNCONFIRMED_RETENTION_DAYS", default=7)

# --- Digests -----------------------------------------------------------------------
# Local hour (in each subscriber's time zone) at which daily and weekly digests go out,
# and the weekday of the weekly one (0 = Monday).
DIGEST_HOUR: int = env.int("DIGEST_HOUR", default=7)
DIGEST_WEEKDAY: int = env.int("DIGEST_WEEKDAY", default=0)
# A digest whose hour passed while nothing ran (an outage) is still sent this many
# hours late; after that, the next period's digest picks its alerts up.
DIGEST_CATCH_UP_HOURS: int = env.int("DIGEST_CATCH_UP_HOURS", default=12)
if not (0 <= DIGEST_HOUR <= 23 and 0 <= DIGEST_WEEKDAY <= 6):
    raise ImproperlyConfigured("DIGEST_HOUR must be 0-23 and DIGEST_WEEKDAY 0-6.")

# --- Fan-out ---------------------------------------------------------------------
# Recipients per provider call; 0 means the provider's own limit (Mailgun 1,000).
FANOUT_BATCH_SIZE: int = env.int("FANOUT_BATCH_SIZE", default=0)
# How long a claim on a batch lasts without renewal. A live send renews it every
# quarter of this (a heartbeat in the worker process, even during a slow provider
# call), so a short lease never takes a batch from a live worker; a dead worker's
# batch is taken over this long after its last heartbeat, or at once when Celery
# redelivers the dead worker's task.
BATCH_LEASE_SECONDS: int = env.int("BATCH_LEASE_SECONDS", default=12)
# The same for the one walker cutting an alert's audience into batches.
CUT_LEASE_SECONDS: int = env.int("CUT_LEASE_SECONDS", default=20)
# The sweeper re-queues fan-outs and batches left pending this long (a message lost
# with a broker restart, or with a worker killed before it started the task).
SWEEP_REQUEUE_AFTER_SECONDS: int = env.int("SWEEP_REQUEUE_AFTER_SECONDS", default=15)
# Transient provider failures (429, 5xx, timeouts, network) are retried with backoff
# for this long after a batch was cut: an hour, because a provider outage of minutes
# must not lose a breaking alert, and an alert still undelivered after an hour has
# usually been overtaken by the news (the editor can still "Retry failed now").
SEND_GIVE_UP_AFTER_SECONDS: int = env.int("SEND_GIVE_UP_AFTER_SECONDS", default=3600)
# While the provider is failing, each batch backs off up to RETRY_MAX_DELAY_SECONDS,
# and one batch per alert or digest run probes it every PROVIDER_PROBE_SECONDS; the
# first probe that gets through wakes every waiting batch at once.
RETRY_MAX_DELAY_SECONDS: int = env.int("RETRY_MAX_DELAY_SECONDS", default=300)
PROVIDER_PROBE_SECONDS: int = env.int("PROVIDER_PROBE_SECONDS", default=10)
# A batch taken over from dead holders this many times is set aside (a dead letter):
# it is what kills them, and the rest of the alert must finish.
DEAD_LETTER_AFTER_TAKEOVERS: int = env.int("DEAD_LETTER_AFTER_TAKEOVERS", default=3)
if CUT_LEASE_SECONDS < 4 or BATCH_LEASE_SECONDS < 4:
    raise ImproperlyConfigured("BATCH_LEASE_SECONDS and CUT_LEASE_SECONDS must be at least 4.")

RATELIMIT_USE_CACHE = "default"
# Every limit is keyed by alerts.common.network.ratelimit_key, which follows
# TRUSTED_PROXIES; django-ratelimit's own "ip" key is never used.
RATELIMIT_VIEW = "alerts.signup.views.rate_limited"

# --- Celery ------------------------------------------------------------------------
CELERY_BROKER_URL: str = env.str("CELERY_BROKER_URL", default=f"{_redis_base}/0")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ALWAYS_EAGER: bool = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# A send task acknowledges only after it finishes, so a worker that dies mid-send
# leaves its message to be redelivered; the database claim stops a double send.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker keeps trying to reach a lost broker for as long as it takes (every second,
# config/celery.py): the default gives up after 100 attempts and exits.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# Hard limit for any task; the visibility timeout is more than twice it, so Redis only
# redelivers a task whose worker is really gone (see config/celery.py).
CELERY_TASK_TIME_LIMIT: int = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT: int = CELERY_TASK_TIME_LIMIT - 30
CELERY_VISIBILITY_TIMEOUT: int = env.int("CELERY_VISIBILITY_TIMEOUT", default=900)
if CELERY_VISIBILITY_TIMEOUT < 2 * CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured("CELERY_VISIBILITY_TIMEOUT must be at least twice the task time limit.")
# Celery's Django fix-up otherwise closes the database connection after every task, so
# each batch would open a new PostgreSQL backend (about 12 ms). Connections are reused
# for this many tasks; config/celery.py still drops broken or expired ones first.
CELERY_DB_REUSE_MAX: int = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
}
# kombu's Redis transport, fixed so that a worker losing Redis with a message in hand
# carries on instead of stopping (config/broker.py); rediss:// keeps kombu's own.
if CELERY_BROKER_URL.startswith("redis://"):
    CELERY_BROKER_TRANSPORT = "config.broker:Transport"

# Plain lines for a terminal; LOG_FORMAT=json for one JSON object per line, with the
# alert, batch and task ids where they apply (config/logging.py).
LOG_FORMAT: str = env.str("LOG_FORMAT", default="plain")
try:
    LOGGING = logging_config(log_format=LOG_FORMAT, level=env.str("LOG_LEVEL", default="INFO"))
except ValueError as error:
    raise ImproperlyConfigured(str(error)) from None
# The worker and beat log through LOGGING too, instead of Celery's own format; and
# Python's warnings become log records, so they are JSON lines too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
logging.captureWarnings(True)

# Pepper for keyed hashes of addresses (suppression list). Changing it makes existing
# suppressions unmatchable, so it is not derived from SECRET_KEY, which rotates.
EMAIL_HASH_KEY: str = env.str("EMAIL_HASH_KEY", default="")
if not EMAIL_HASH_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set EMAIL_HASH_KEY (a long random secret that never rotates).")
    EMAIL_HASH_KEY = "dev-only-email-hash-key"

# --- Subscriber control: unsubscribe, preferences, bounces, data rights (issue 4) ---
# Provider tracking webhooks (/anymail/<esp>/tracking/). With tracking on, production
# refuses to start without ANYMAIL_WEBHOOK_SECRET (alerts.checks): anymail alone would
# only warn and then accept anyone's forged bounces and complaints.
TRACKING_WEBHOOKS_ENABLED: bool = env.bool("TRACKING_WEBHOOKS_ENABLED", default=True)
# Lower-case anymail ESP names whose tracking events we act on; others are ignored.
# By default, the providers configured to send (EMAIL_BACKEND and its fallback), or
# Mailgun, the reference, when neither is an anymail provider.
_TRACKING_ESPS = {"mailgun": "mailgun", "sendgrid": "sendgrid", "postmark": "postmark", "mandrill": "mandrill",
                  "mailjet": "mailjet", "sparkpost": "sparkpost", "brevo": "brevo", "sendinblue": "sendinblue",
                  "unisender_go": "unisender go", "resend": "resend", "amazon_ses": "amazon ses",
                  "postal": "postal", "mailersend": "mailersend", "mailtrap": "mailtrap"}
_SENDING_ESPS = [_TRACKING_ESPS[path.split(".")[2]] for path in (EMAIL_BACKEND, EMAIL_BACKEND_FALLBACK)
                 if path.startswith("anymail.backends.") and path.split(".")[2] in _TRACKING_ESPS]
TRACKING_WEBHOOK_ESPS: list[str] = [
    name.lower() for name in env.list("TRACKING_WEBHOOK_ESPS", default=_SENDING_ESPS or ["mailgun"])
]
# Signed provider webhooks (Mailgun, Resend) are refused when their timestamp is further
# than this from now, or their one-time token was seen before (alerts/webhooks.py).
WEBHOOK_MAX_AGE_SECONDS: int = env.int("WEBHOOK_MAX_AGE_SECONDS", default=900)
# Soft bounces (temporary failures) suppress an address only after this many distinct
# messages within the window, counted since its last successful delivery.
SOFT_BOUNCE_LIMIT: int = env.int("SOFT_BOUNCE_LIMIT", default=3)
SOFT_BOUNCE_WINDOW_DAYS: int = env.int("SOFT_BOUNCE_WINDOW_DAYS", default=30)
# Delivery ledger rows and provider events older than this are purged.
DELIVERY_RETENTION_DAYS: int = env.int("DELIVERY_RETENTION_DAYS", default=180)
if DELIVERY_RETENTION_DAYS <= SOFT_BOUNCE_WINDOW_DAYS:
    raise ImproperlyConfigured("DELIVERY_RETENTION_DAYS must exceed SOFT_BOUNCE_WINDOW_DAYS.")
# "Unsubscribed by mistake?" undo resubscribes at once within this many hours; after
# it, coming back takes a fresh double opt-in (the link may be in a forwarded email).
UNSUBSCRIBE_UNDO_HOURS: int = env.int("UNSUBSCRIBE_UNDO_HOURS", default=48)
# Per-address limits on "email me my preferences link" (list-bombing defence).
PREFERENCES_LINK_COOLDOWN_SECONDS: int = env.int("PREFERENCES_LINK_COOLDOWN_SECONDS", default=600)
PREFERENCES_LINK_DAILY_LIMIT: int = env.int("PREFERENCES_LINK_DAILY_LIMIT", default=3)

# --- The publishing API (/api/v1/) ---------------------------------------------------
# Requests per API token. A CMS that polls an alert's progress every second makes 60 a
# minute; 300 leaves room for several alerts at once and stops a runaway script.
API_RATE_PER_TOKEN: str = env.str("API_RATE_PER_TOKEN", default="300/m")
# Requests with a missing or wrong token per client address (behind TRUSTED_PROXIES).
# An integration misconfigured after a token rotation fails a few times a minute;
# more than this is somebody trying tokens.
API_AUTH_FAILURES_PER_IP: str = env.str("API_AUTH_FAILURES_PER_IP", default="30/m")
# How long an Idempotency-Key's first answer is replayed: a day, as the payment APIs
# that made the header common keep theirs, longer than any client's retry loop.
API_IDEMPOTENCY_HOURS: int = env.int("API_IDEMPOTENCY_HOURS", default=24)
# The largest request body the API reads. An alert with every field full is about 25 KB,
# and under 150 KB even from a client that escapes every character as \uXXXX.
API_MAX_BODY_BYTES: int = env.int("API_MAX_BODY_BYTES", default=256 * 1024)

# --- Outgoing webhooks --------------------------------------------------------------
# How long one delivery waits for the receiver: a receiver should answer at once and do
# its work later (the Standard Webhooks advice), and a worker waits no longer than this.
WEBHOOK_TIMEOUT_SECONDS: int = env.int("WEBHOOK_TIMEOUT_SECONDS", default=10)
# Retries double from WEBHOOK_RETRY_SECONDS up to WEBHOOK_MAX_DELAY_SECONDS: with the
# defaults (10 s, an hour, 15 attempts) a receiver down for up to about six hours still
# gets every event, once it is back.
WEBHOOK_RETRY_SECONDS: int = env.int("WEBHOOK_RETRY_SECONDS", default=10)
WEBHOOK_MAX_DELAY_SECONDS: int = env.int("WEBHOOK_MAX_DELAY_SECONDS", default=3600)
WEBHOOK_MAX_ATTEMPTS: int = env.int("WEBHOOK_MAX_ATTEMPTS", default=15)
# Delivered and failed messages name readers, so they go after this many days (a month
# to look into a receiver's complaint); erasing a reader scrubs their address at once.
WEBHOOK_RETENTION_DAYS: int = env.int("WEBHOOK_RETENTION_DAYS", default=30)
# --- Observability: metrics, logs, errors, deliverability guard --------------------
# The Prometheus endpoint (/metrics) answers only a scraper that sends
# "Authorization: Bearer <METRICS_TOKEN>" or comes from METRICS_ALLOWED_NETWORKS (CIDR
# list, e.g. 10.0.0.0/8, the address as TRUSTED_PROXIES tells it). Both empty by
# default: a fresh deployment exposes nothing until the operator chooses.
METRICS_TOKEN: str = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS: list[str] = env.list("METRICS_ALLOWED_NETWORKS", default=[])
for _network in METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {_network!r} is not a network.") from None
# Per-alert gauges (hand-off and inbox times) for this many of the latest alerts: enough
# to compare the last one with the ones before, few enough to keep series bounded.
METRICS_RECENT_ALERTS: int = env.int("METRICS_RECENT_ALERTS", default=5)
# Spam complaints over the last 24 hours, as a share of emails handed off: above WARN
# (Gmail's and Yahoo's 0.1%) every admin page warns and the log says so; above CONFIRM
# (their 0.3% ceiling) the editor confirms the figure before publishing.
DELIVERABILITY_COMPLAINT_WARN: float = env.float("DELIVERABILITY_COMPLAINT_WARN", default=0.001)
DELIVERABILITY_COMPLAINT_CONFIRM: float = env.float("DELIVERABILITY_COMPLAINT_CONFIRM", default=0.003)
# Re-engagement ("still want these?", alerts/subscribers/reengagement.py): a confirmed
# reader who was sent emails for REENGAGE_AFTER_MONTHS months (30 days each) without
# one open or click is asked once by email, and unsubscribed if they neither press
# "Yes, keep sending" nor open or click anything within REENGAGE_GRACE_DAYS. Off (0)
# by default, because opens are unreliable: Apple Mail Privacy Protection opens every
# email by itself, and readers who block images never register an open, so someone
# who reads every alert may show none. Turn it on only where open tracking is on at
# the provider and trusted. It also does nothing while tracking webhooks are off or
# the sending provider's events are not received (TRACKING_WEBHOOK_ESPS). The window
# must fit inside DELIVERY_RETENTION_DAYS, or opens older than the purge would be
# missed.
REENGAGE_AFTER_MONTHS: int = env.int("REENGAGE_AFTER_MONTHS", default=0)
REENGAGE_GRACE_DAYS: int = env.int("REENGAGE_GRACE_DAYS", default=14)
if REENGAGE_AFTER_MONTHS < 0 or REENGAGE_GRACE_DAYS < 1:
    raise ImproperlyConfigured("REENGAGE_AFTER_MONTHS is 0 (off) or more; REENGAGE_GRACE_DAYS is 1 or more.")
if REENGAGE_AFTER_MONTHS * 30 > DELIVERY_RETENTION_DAYS:
    raise ImproperlyConfigured("REENGAGE_AFTER_MONTHS (30 days each) must fit inside DELIVERY_RETENTION_DAYS.")
# The "Yes, keep sending" link works through the grace period and a week beyond (a
# reader back from holiday still gets a clear answer rather than a broken link).
REENGAGE_LINK_MAX_AGE: int = (REENGAGE_GRACE_DAYS + 7) * 24 * 3600
# Errors of the web app and the workers go to Sentry when SENTRY_DSN is set, with no
# personal data (config/sentry.py); without it nothing is started. Tracing is off
# unless asked for: it would send a sample of every request.
SENTRY_DSN: str = env.str("SENTRY_DSN", default="")
SENTRY_ENVIRONMENT: str = env.str("SENTRY_ENVIRONMENT", default="")
SENTRY_TRACES_SAMPLE_RATE: float = env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0)
init_sentry(dsn=SENTRY_DSN, environment=SENTRY_ENVIRONMENT, release=env.str("SENTRY_RELEASE", default=""),
            traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE)

# --- The newsroom: archive, audit, approval, the editor's screen --------------------
# A public web page for every sent alert, an index and RSS/Atom feeds, and a "View in
# your browser" link in every email. On by default: an alert is news already public on
# the publication's site; a newsroom whose alerts are for subscribers only turns it off
# (the pages then 404 and emails carry no link).
PUBLIC_ARCHIVE: bool = env.bool("PUBLIC_ARCHIVE", default=True)
# A second pair of eyes: an alert that would reach more than this many readers waits
# for another editor's approval (not its author's) before it can be published or
# scheduled. 0, the default, turns it off: breaking news usually goes out on one
# editor's judgment, and a newsroom opts in to the delay.
APPROVAL_REQUIRED_ABOVE: int = env.int("APPROVAL_REQUIRED_ABOVE", default=0)
if APPROVAL_REQUIRED_ABOVE < 0:
    raise ImproperlyConfigured("APPROVAL_REQUIRED_ABOVE is a number of readers: 0 (off) or more.")
