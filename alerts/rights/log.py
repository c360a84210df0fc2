"""The record of every download and erasure of readers' data: who, when, how."""

from __future__ import annotations

from ..models import RightsEvent


def rights_record(*, kind: str, via: str, subscriber_ids: list[int | None], actor=None,
                  count: int = 1) -> None:
    """Append one RightsEvent per subscriber (or one for a whole-list export, with
    `subscriber_ids=[None]` and its `count`). `actor` is the staff user, or None for
    the reader themselves or a command run on the server."""
    actor_name = actor.get_username() if actor is not None else ""
    RightsEvent.objects.bulk_create([
        RightsEvent(kind=kind, via=via, subscriber_ref=ref, count=count, actor=actor, actor_name=actor_name)
        for ref in subscriber_ids
    ])


def exported_since(subscriber_id: int, moment) -> bool:
    """Whether the reader downloaded their data through an emailed link at or after
    `moment`: what makes each download link work once."""
    return RightsEvent.objects.filter(kind=RightsEvent.Kind.EXPORT, via=RightsEvent.Via.EMAIL_LINK,
                                      subscriber_ref=subscriber_id, at__gte=moment).exists()
