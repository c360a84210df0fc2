"""The benchmark's child processes: the fake provider and the Celery workers, the
environment they run with, and the fake's control and statistics endpoints.

Each child runs in its own process group, so that stopping one also stops its children
(Celery's prefork pool).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from bench.constants import (
    API_KEY,
    BROKER_DB,
    CACHE_DB,
    DB_NAME,
    EMAIL_HASH_KEY,
    PG_SERVER,
    REDIS_SERVER,
    ROOT,
    SECRET_KEY,
    SENDER_DOMAIN,
)

if TYPE_CHECKING:
    from celery import Celery


def base_env(settings_module: str = "config.settings", *, pg_server: str = PG_SERVER,
             redis_server: str = REDIS_SERVER) -> dict[str, str]:
    """What the benchmark, migrate and the workers all run with. The chaos benchmark
    passes its own throwaway PostgreSQL or Redis server for the scenarios that restart
    one; the benchmark's databases on them have the same names and numbers."""
    return {
        "DJANGO_SETTINGS_MODULE": settings_module,
        "SECRET_KEY": SECRET_KEY,
        "EMAIL_HASH_KEY": EMAIL_HASH_KEY,
        "DEBUG": "0",
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "news.example.com,127.0.0.1,localhost",
        "SITE_URL": "https://news.example.com",
        "DATABASE_URL": f"{pg_server}/{DB_NAME}",
        "CELERY_BROKER_URL": f"{redis_server}/{BROKER_DB}",
        "CACHE_REDIS_URL": f"{redis_server}/{CACHE_DB}",
        "LOG_LEVEL": "WARNING",
        "DEFAULT_FROM_EMAIL": "The Daily Courier <alerts@news.example.com>",
        "PUBLICATION_NAME": "The Daily Courier",
        # With DEBUG off, system checks (run by migrate and the worker) refuse to start
        # without webhook secrets; the benchmark never receives webhooks.
        "ANYMAIL_WEBHOOK_SECRET": "bench:bench",
        "MAILGUN_WEBHOOK_SIGNING_KEY": "bench-signing-key",
        "PYTHONUNBUFFERED": "1",
    }


# The fake of each provider the benchmark can drive: its module (python -m), and the
# settings that point the real anymail backend at it (the API key is the fake's).
FAKES = {
    # smtp: the fast sink (aiosmtpd's own takes about 450 a second here).
    "mailgun": "tests.fakes.mailgun", "smtp": "tests.fakes.smtp_sink", "smtp-aiosmtpd": "tests.fakes.smtp",
    "sendgrid": "tests.fakes.sendgrid",
    "postmark": "tests.fakes.postmark", "mandrill": "tests.fakes.mandrill", "mailjet": "tests.fakes.mailjet",
    "sparkpost": "tests.fakes.sparkpost", "brevo": "tests.fakes.brevo", "unisender_go": "tests.fakes.unisender_go",
    "resend": "tests.fakes.resend", "amazon_ses": "tests.fakes.amazon_ses", "mailtrap": "tests.fakes.mailtrap",
    # One message a call.
    "postal": "tests.fakes.postal", "scaleway": "tests.fakes.scaleway", "mailersend": "tests.fakes.mailersend",
}
_API_PATHS = {"sendgrid": "/v3/", "postmark": "/", "mandrill": "/api/1.0", "mailjet": "/v3.1/",
              "sparkpost": "/api/v1/", "brevo": "/v3/", "unisender_go": "/ru/transactional/api/v1/", "resend": "/",
              "mailtrap": "/api/", "postal": "/", "scaleway": "/transactional-email/v1alpha1/regions/fr-par/",
              "mailersend": "/v1/"}
_KEY_NAMES = {"sendgrid": "SENDGRID_API_KEY", "postmark": "POSTMARK_SERVER_TOKEN", "mandrill": "MANDRILL_API_KEY",
              "mailjet": "MAILJET_API_KEY", "sparkpost": "SPARKPOST_API_KEY", "brevo": "BREVO_API_KEY",
              "unisender_go": "UNISENDER_GO_API_KEY", "resend": "RESEND_API_KEY",
              "mailtrap": "MAILTRAP_API_TOKEN", "postal": "POSTAL_API_KEY", "scaleway": "SCALEWAY_SECRET_KEY",
              "mailersend": "MAILERSEND_API_TOKEN"}


def backend_env(backend: str, port: int) -> dict[str, str]:
    if backend == "amazon_ses":
        return {
            "EMAIL_BACKEND": "anymail.backends.amazon_ses.EmailBackend",
            "AMAZON_SES_CLIENT_PARAMS": json.dumps({
                "endpoint_url": f"http://127.0.0.1:{port}", "region_name": "eu-west-1",
                "aws_access_key_id": API_KEY, "aws_secret_access_key": "bench-secret"}),
        }
    if backend == "mailgun":
        return {
            "EMAIL_BACKEND": "anymail.backends.mailgun.EmailBackend",
            "MAILGUN_API_KEY": API_KEY,
            "MAILGUN_SENDER_DOMAIN": SENDER_DOMAIN,
            "MAILGUN_API_URL": f"http://127.0.0.1:{port}/v3",
        }
    if backend in _API_PATHS:
        prefix = backend.upper()
        env = {"EMAIL_BACKEND": f"anymail.backends.{backend}.EmailBackend", _KEY_NAMES[backend]: API_KEY,
               f"{prefix}_API_URL": f"http://127.0.0.1:{port}{_API_PATHS[backend]}"}
        if backend == "mailjet":
            env["MAILJET_SECRET_KEY"] = "test-secret-key"  # the fake's
        if backend == "scaleway":
            env["SCALEWAY_PROJECT_ID"] = "11111111-2222-3333-4444-555555555555"
        return env
    return {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(port),
    }


def _die_with_parent() -> None:
    # If the benchmark is SIGKILLed, its children still get SIGTERM (Linux only).
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Processes:
    """Every subprocess the benchmark starts, each in its own process group, so that
    stopping one also stops its children (Celery's prefork pool)."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str], log: Path,
              stdout_pipe: bool = False) -> subprocess.Popen:
        log_file = open(log, "ab")  # noqa: SIM115  (the child keeps it)
        proc = subprocess.Popen(
            # preexec_fn is safe here: the benchmark starts no threads of its own.
            cmd, cwd=ROOT, env=env, start_new_session=True, preexec_fn=_die_with_parent,  # noqa: PLW1509
            stdout=subprocess.PIPE if stdout_pipe else log_file, stderr=log_file,
        )
        log_file.close()
        self.started.append((name, proc))
        return proc

    def dead(self) -> list[str]:
        return [f"{name} (exit {proc.returncode})" for name, proc in self.started
                if proc.poll() is not None]

    def stop_all(self, grace: float = 10.0) -> None:
        """SIGTERM every group (warm shutdown), then SIGKILL whatever is left."""
        running = [(name, proc) for name, proc in self.started if proc.poll() is None]
        for _, proc in running:
            signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, proc in running:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        for _, proc in self.started:
            # The group may outlive its leader (pool children): kill it regardless.
            signal_group(proc, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(timeout=5)
        self.started.clear()


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # our child's own group: start_new_session=True
    except (ProcessLookupError, PermissionError):
        pass


def start_fake(procs: Processes, backend: str, run_dir: Path,
               extra: tuple[str, ...] = (), *, record: Path | None = None,
               log_name: str = "fake.log") -> tuple[int, Path, subprocess.Popen]:
    """Start the fake provider on a free port, with `extra` options; return (port,
    record file, process). A second fake (the fallback) may share the first's record."""
    record = record or run_dir / "accepted.tsv"
    record.touch()
    cmd = [sys.executable, "-m", FAKES[backend], "--port", "0", "--record", str(record), *extra]
    if not backend.startswith("smtp"):
        cmd += ["--api-key", API_KEY]
    proc = procs.start(f"fake {backend}", cmd, dict(os.environ), run_dir / log_name, stdout_pipe=True)
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline().decode() if ready else ""
    match = re.search(r":(\d+)(/|$)", line.strip())
    if not match:
        raise RuntimeError(f"fake {backend} did not start: {line!r}; see {run_dir / log_name}")
    return int(match[1]), record, proc


def start_workers(procs: Processes, args: argparse.Namespace, env: dict[str, str],
                  run_dir: Path) -> list[tuple[str, subprocess.Popen]]:
    workers = []
    for index in range(args.workers):
        name = f"bench{index}-{os.getpid()}"
        cmd = [sys.executable, "-m", "celery", "-A", "config", "worker",
               "-Q", "alerts,transactional,digests,sweeps", "-P", "prefork",
               f"--concurrency={args.concurrency}", "--without-gossip", "--without-mingle",
               "--without-heartbeat", "--loglevel=WARNING", "-n", f"{name}@%h"]
        proc = procs.start(f"worker {name}", cmd, env, run_dir / f"worker{index}.log")
        workers.append((name, proc))
    return workers


def wait_for_workers(app: Celery, workers: list[tuple[str, subprocess.Popen]], procs: Processes,
                     timeout: float = 90) -> None:
    """Ping until every worker answers: then it is consuming, its pool already forked."""
    waiting = {name for name, _ in workers}
    deadline = time.monotonic() + timeout
    while waiting:
        if procs.dead():
            raise RuntimeError(f"exited during startup: {', '.join(procs.dead())}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers not ready after {timeout:.0f}s: {sorted(waiting)}")
        for reply in app.control.ping(timeout=0.5) or []:
            for node in reply:
                waiting.discard(node.split("@", 1)[0])


def mailgun_control(port: int, command: dict) -> dict:
    """Send a /_control command to the fake Mailgun; returns its statistics after it."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/_control", data=json.dumps(command).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def mailgun_stats(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=5) as response:
            return json.load(response)
    except OSError as error:
        return {"error": str(error)}
