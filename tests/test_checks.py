"""Production settings, loaded the way a server loads them: in a fresh process with
only the environment an operator would set."""

from __future__ import annotations

import os
import secrets
import string
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def production_env(**overrides: str | None) -> dict[str, str]:
    """A production-like environment, built from nothing so that the test settings'
    defaults in this process (SECRET_KEY, DEBUG...) cannot leak in. None removes a key."""
    alphabet = string.ascii_letters + string.digits + "!@#%^&*(-_=+)"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": "".join(secrets.choice(alphabet) for _ in range(50)),
        "EMAIL_HASH_KEY": secrets.token_urlsafe(32),
        "ALLOWED_HOSTS": "news.example.com",
        "SITE_URL": "https://news.example.com",
        "DATABASE_URL": "sqlite:////tmp/x.sqlite3",
        # Required by the tracking-webhook checks (stoppress.E002/E003) when webhooks are on.
        "ANYMAIL_WEBHOOK_SECRET": "user:" + secrets.token_urlsafe(16),
        "MAILGUN_WEBHOOK_SIGNING_KEY": secrets.token_urlsafe(16),
    }
    env.update(overrides)
    return {key: value for key, value in env.items() if value is not None}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_production_settings_pass_every_deploy_check():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert result.returncode == 0, result.stderr


def test_the_production_settings_have_no_deploy_errors():
    result = manage("check", "--deploy", "--fail-level", "ERROR", env=production_env())
    assert result.returncode == 0, result.stderr
    assert "ERRORS:" not in result.stderr


def test_hsts_preload_is_the_newsrooms_choice_and_then_fully_configured():
    """W021 is silenced only while preloading is off; opting in passes every check."""
    result = manage("check", "--deploy", "--fail-level", "WARNING",
                    env=production_env(SECURE_HSTS_PRELOAD="1"))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("debug", [None, "0", "false"])
def test_the_settings_refuse_to_load_without_a_secret_key(debug):
    result = manage("check", env=production_env(SECRET_KEY=None, DEBUG=debug))
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_an_empty_secret_key_counts_as_missing():
    result = manage("check", env=production_env(SECRET_KEY=""))
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_the_settings_refuse_to_load_without_the_email_hash_key():
    result = manage("check", env=production_env(EMAIL_HASH_KEY=None))
    assert result.returncode != 0
    assert "EMAIL_HASH_KEY" in result.stderr


# --- DEBUG is for this machine only -----------------------------------------------------


@pytest.mark.parametrize("hosts", ["news.example.com", "localhost,news.example.com", "*", "93.184.216.34",
                                   ".example.com"])
def test_debug_with_a_public_host_refuses_to_start(hosts):
    result = manage("check", env=production_env(DEBUG="1", ALLOWED_HOSTS=hosts))
    assert result.returncode != 0
    assert "stoppress.E004" in result.stderr


@pytest.mark.parametrize("hosts", [None, "localhost,127.0.0.1,[::1]", "stoppress.localhost,10.0.0.5",
                                   "news.test"])
def test_debug_on_local_hosts_is_allowed(hosts):
    result = manage("check", env=production_env(DEBUG="1", ALLOWED_HOSTS=hosts))
    assert result.returncode == 0, result.stderr


def test_the_wsgi_application_refuses_to_load_with_debug_on_a_public_host():
    code = "import config.wsgi"
    bad = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env=production_env(DEBUG="1"))
    assert bad.returncode != 0 and "stoppress.E004" in bad.stderr
    good = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=production_env())
    assert good.returncode == 0, good.stderr


# --- The fallback provider ---------------------------------------------------------------

def test_a_fallback_provider_that_cannot_be_loaded_is_an_error_at_start():
    result = manage("check", env=production_env(EMAIL_BACKEND_FALLBACK="anymail.backends.nosuch.EmailBackend"))
    assert result.returncode != 0
    assert "stoppress.E020" in result.stderr


def test_a_fallback_that_is_the_primary_is_refused():
    backend = "anymail.backends.mailgun.EmailBackend"
    result = manage("check", env=production_env(EMAIL_BACKEND=backend, EMAIL_BACKEND_FALLBACK=backend))
    assert result.returncode != 0
    assert "EMAIL_BACKEND_FALLBACK must be another provider" in result.stderr


def test_a_real_fallback_provider_passes_the_checks():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env(
        EMAIL_BACKEND_FALLBACK="anymail.backends.sendgrid.EmailBackend", SENDGRID_API_KEY="k"))
    assert result.returncode == 0, result.stderr
