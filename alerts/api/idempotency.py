"""`Idempotency-Key` on every write: a retried request with the same key, from the same
token, gets the first answer again and acts once.

The key's row is inserted in the same transaction as the write itself, before it: a
concurrent retry's insert waits on the unique (token, key) until the first commits,
then finds the row and replays its answer; if the first failed and rolled back, the
retry acts instead. Only answers below 500 are kept: an error raised by the view
(a `Problem`) rolls the write back and leaves the key unused, so a corrected retry
can use it. The same key with a different method, path or body is refused (422).
Keys expire after API_IDEMPOTENCY_HOURS and are purged nightly."""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from ..models import IdempotentRequest
from .problems import Problem

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


def idempotent(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Decorate a write view (after authentication: request.auth is its ApiToken). The
    view returns an HttpResponse and raises Problem for errors."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        key = request.headers.get(HEADER)
        if not key:
            return view(request, *args, **kwargs)
        return _once(request, key, lambda: view(request, *args, **kwargs))

    # ninja reads the view's parameters from its signature; resolve the annotations in
    # the view's own module, not in this one.
    wrapper.__signature__ = inspect.signature(view, eval_str=True)
    return wrapper


def _fingerprint(request: HttpRequest) -> str:
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    digest.update(request.body)
    return digest.hexdigest()


def _once(request: HttpRequest, key: str, run: Callable[[], HttpResponse]) -> HttpResponse:
    token, fingerprint = request.auth, _fingerprint(request)
    with transaction.atomic():
        IdempotentRequest.objects.filter(token=token, key=key, expires_at__lte=timezone.now()).delete()
        try:
            with transaction.atomic():
                record = IdempotentRequest.objects.create(
                    token=token, key=key, fingerprint=fingerprint,
                    expires_at=timezone.now() + timedelta(hours=settings.API_IDEMPOTENCY_HOURS))
        except IntegrityError:
            record = None  # answered before (or just now, by a concurrent retry)
        if record is not None:
            response = run()
            if response.status_code >= 500:
                transaction.set_rollback(True)
                return response
            record.status_code, record.response = response.status_code, response.content.decode()
            record.location = response.get("Location", "")
            record.save(update_fields=["status_code", "response", "location"])
            return response
    first = IdempotentRequest.objects.filter(token=token, key=key).first()
    if first is None:  # expired between the two statements
        raise Problem(409, "Retry this request.", slug="idempotency-key-in-use", headers={"Retry-After": "1"})
    if first.fingerprint != fingerprint:
        raise Problem(422, f"This {HEADER} was used for a different request; use a new key for a new "
                           "request.", slug="idempotency-key-reused")
    logger.info("Replayed the answer to %s %s for Idempotency-Key %r", request.method, request.path, key)
    return replay(first)


def replay(record: IdempotentRequest) -> HttpResponse:
    response = HttpResponse(record.response, status=record.status_code, content_type="application/json")
    if record.location:
        response["Location"] = record.location
    response[REPLAYED] = "true"
    return response


def purge_expired() -> int:
    """Delete expired keys; safe to run at any time, returns how many went."""
    deleted, _ = IdempotentRequest.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted
