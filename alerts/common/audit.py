"""The audit trail: `record_audit` writes one append-only AuditEvent for an editorial
action or a change to what is sent or to whom. Any entry point calls it (the admin, an
API, a command) with what it knows: the request gives the user and the client address
(behind TRUSTED_PROXIES, common/network.py)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from django.db import models
from django.http import HttpRequest

from ..models import AuditEvent
from .network import client_address


def record_audit(*, action: str, request: HttpRequest | None = None, actor=None, target: models.Model | None = None,
                 changes: dict[str, Any] | None = None, note: str = "", via: str = "",
                 actor_name: str = "") -> AuditEvent:
    """Record that `actor` (default: the request's user) did `action` (an
    AuditEvent.Action) to `target`, with `changes` ({"field": [before, after]} for an
    edit). Values are stored as JSON (dates as ISO 8601, anything else as its text)."""
    if actor is None and request is not None and getattr(request, "user", None) is not None \
            and request.user.is_authenticated:
        actor = request.user
    return AuditEvent.objects.create(
        action=action, via=via or (AuditEvent.Via.ADMIN if request is not None else AuditEvent.Via.SYSTEM),
        actor=actor, actor_name=(actor_name or (actor.get_username() if actor is not None else ""))[:150],
        ip_address=client_address(request) if request is not None else None,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=target.pk if target is not None else None,
        target_repr=str(target)[:200] if target is not None else "",
        changes={key: _plain(value) for key, value in (changes or {}).items()}, note=note[:400],
    )


def field_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list]:
    """{"field": [before, after]} for each field whose value differs."""
    return {name: [before.get(name), value] for name, value in after.items() if before.get(name) != value}


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
