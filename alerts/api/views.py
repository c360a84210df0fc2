"""The publishing API, version 1, on django-ninja: each view checks its token's scope,
calls the editor's own services (publishing/services.py) and answers with the alert
as it now is, live progress included.

New endpoints on an alert join `alerts_router` with the same helpers: `_alert_or_404`,
`_require_publish`, `@idempotent`, and `_audit` for every write (via=API, the token's
name as the actor)."""

from __future__ import annotations

from typing import Annotated

from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from ninja import Header, NinjaAPI, Path, Router
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import HttpBearer

from ..common.audit import record_audit
from ..models import Alert, ApiToken, AuditEvent, Topic
from ..observability.time_to_inbox import alert_inbox_times
from ..publishing import corrections, services
from ..publishing.progress import alert_progress
from .idempotency import idempotent
from .openapi import ProblemDocumentedAPI
from .problems import Problem, problem_response
from .schemas import AlertIn, AlertOut, FollowUpIn, ScheduleIn, TopicOut, topic_out
from .tokens import check_rate, count_failure, token_authenticate


class TokenAuth(HttpBearer):
    """`Authorization: Bearer sp_…`: an active API token, within its rate limit; and a
    client sending wrong tokens over and over is held back."""

    def __call__(self, request: HttpRequest) -> ApiToken | None:
        row = super().__call__(request)
        if row is None:
            count_failure(request)
        return row

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken | None:
        row = token_authenticate(token)
        if row is not None:
            check_rate(request, row)
        return row


api: NinjaAPI = ProblemDocumentedAPI(
    title="Stop Press publishing API", version="1", urls_namespace="api-v1", auth=TokenAuth(),
    description="Create, publish, schedule, stop and follow breaking-news alerts. "
                "Authenticate with `Authorization: Bearer <token>` (tokens are made in the admin); "
                "send an `Idempotency-Key` with every write so that a retry acts once; "
                "errors are `application/problem+json` (RFC 9457).",
)
alerts_router = Router(tags=["alerts"])
topics_router = Router(tags=["topics"])

IdempotencyKey = Annotated[str | None, Header(
    None, alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
    description="A unique string per write (a UUID, say). A retry with the same key gets the "
                "first answer again and acts once; keys are kept for a day.")]
AlertId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _alert_or_404(alert_id: int) -> Alert:
    return get_object_or_404(Alert.objects.prefetch_related("topics"), pk=alert_id)


def _require_publish(request: HttpRequest) -> None:
    if not request.auth.can_publish:
        raise Problem(403, "This token may write drafts only; publishing, scheduling and stopping "
                           "need a draft+publish token.", slug="scope")


def _alert_response(alert_id: int, status: int = 200) -> HttpResponse:
    alert = _alert_or_404(alert_id)
    follow_ups = list(alert.follow_ups.order_by("pk").values_list("pk", flat=True))
    # The cached figures, as the progress page's poll reads them: a CMS polling every
    # second costs one sort of the alert's delivered events per CACHE_SECONDS.
    body = AlertOut.of(alert, alert_progress(alert), follow_ups=follow_ups,
                       inbox=alert_inbox_times(alert, cached=True)).model_dump_json()
    response = HttpResponse(body, status=status, content_type="application/json")
    if status == 201:
        response["Location"] = reverse("api-v1:alert_read", args=[alert.pk])
    return response


def _audit(request: HttpRequest, action: str, alert_id: int, **details) -> None:
    """The audit trail's record of an API write: the token's name as the actor, the
    client's address, in the write's own transaction."""
    record_audit(action=action, request=request, target=Alert.objects.get(pk=alert_id),
                 via=AuditEvent.Via.API, actor_name=f"API token: {request.auth.name}", **details)


def _refused(alert_id: int, action: str) -> Problem:
    status = Alert.objects.values_list("status", flat=True).get(pk=alert_id)
    return Problem(409, f"The alert is {status}: it cannot be {action}.", slug="alert-state")


@alerts_router.post("", response={201: AlertOut}, url_name="alert_create",
                    summary="Create an alert: a draft, scheduled, or published at once")
@idempotent
def alert_create(request: HttpRequest, payload: AlertIn, idempotency_key: IdempotencyKey = None):
    if payload.status != "draft":
        _require_publish(request)
    with transaction.atomic():
        try:
            topics = services.topics_by_slug(payload.topics)
        except services.UnknownTopics as unknown:
            raise Problem(422, str(unknown), slug="validation", errors=[
                {"field": "topics", "message": f"unknown topic {slug!r}"} for slug in unknown.slugs]) from None
        text = payload.model_dump(include={"headline", "standfirst", "body", "url", "image_url", "image_alt"})
        alert = services.alert_create(**text, topics=topics)
        _audit(request, AuditEvent.Action.ALERT_CREATED, alert.pk,
               changes={**text, "topics": [topic.slug for topic in topics]})
        # ApprovalRequired raised here rolls the whole call back: nothing is created.
        if payload.status == "published":
            services.alert_publish(alert_id=alert.pk)
            _audit(request, AuditEvent.Action.ALERT_PUBLISHED, alert.pk)
        elif payload.status == "scheduled":
            services.alert_schedule(alert_id=alert.pk, when=payload.scheduled_for)
            _audit(request, AuditEvent.Action.ALERT_SCHEDULED, alert.pk,
                   changes={"scheduled_for": [None, payload.scheduled_for]})
    return _alert_response(alert.pk, status=201)


@alerts_router.get("/{alert_id}", response=AlertOut, url_name="alert_read",
                   summary="An alert with its live progress")
def alert_read(request: HttpRequest, alert_id: AlertId):
    return _alert_response(alert_id)


@alerts_router.post("/{alert_id}/publish", response=AlertOut, url_name="alert_publish",
                    summary="Publish a draft or scheduled alert now")
@idempotent
def alert_publish(request: HttpRequest, alert_id: AlertId, idempotency_key: IdempotencyKey = None):
    _require_publish(request)
    _alert_or_404(alert_id)
    if not services.alert_publish(alert_id=alert_id):
        raise _refused(alert_id, "published")
    _audit(request, AuditEvent.Action.ALERT_PUBLISHED, alert_id)
    return _alert_response(alert_id)


@alerts_router.post("/{alert_id}/schedule", response=AlertOut, url_name="alert_schedule",
                    summary="Publish a draft or scheduled alert at an embargo time")
@idempotent
def alert_schedule(request: HttpRequest, alert_id: AlertId, payload: ScheduleIn,
                   idempotency_key: IdempotencyKey = None):
    _require_publish(request)
    before = _alert_or_404(alert_id).scheduled_for
    if not services.alert_schedule(alert_id=alert_id, when=payload.scheduled_for):
        raise _refused(alert_id, "scheduled")
    _audit(request, AuditEvent.Action.ALERT_SCHEDULED, alert_id,
           changes={"scheduled_for": [before, payload.scheduled_for]})
    return _alert_response(alert_id)


@alerts_router.post("/{alert_id}/stop", response=AlertOut, url_name="alert_stop",
                    summary="Stop sending (or cancel a scheduled alert)")
@idempotent
def alert_stop(request: HttpRequest, alert_id: AlertId, idempotency_key: IdempotencyKey = None):
    _require_publish(request)
    status = _alert_or_404(alert_id).status
    if not services.alert_stop(alert_id=alert_id):
        raise _refused(alert_id, "stopped")
    _audit(request, AuditEvent.Action.ALERT_CANCELLED, alert_id,
           changes={"status": [status, Alert.Status.CANCELLED]})
    return _alert_response(alert_id)


def _follow_up(request: HttpRequest, alert_id: int, payload: FollowUpIn, kind: str) -> HttpResponse:
    _require_publish(request)
    original = _alert_or_404(alert_id)
    text = payload.model_dump()
    follow_up = corrections.send_follow_up(original, kind=kind, **text)  # FollowUpRefused: a 409
    label = follow_up.get_kind_display()
    _audit(request, AuditEvent.Action.FOLLOW_UP_SENT, follow_up.pk,
           changes={"kind": kind, "follow_up_of": original.pk, **text},
           note=f"{label} of alert {original.pk}: {original.headline}")
    if follow_up.status == Alert.Status.DRAFT:  # past APPROVAL_REQUIRED_ABOVE: it waits for an editor
        _audit(request, AuditEvent.Action.APPROVAL_REQUESTED, follow_up.pk)
    return _alert_response(follow_up.pk, status=201)


FOLLOW_UP_HELP = ("Sent at once to exactly the readers who received the original (less those who have "
                  "unsubscribed or were suppressed since), threaded under it in their mail apps. Past "
                  "APPROVAL_REQUIRED_ABOVE readers it is created as a draft for an editor to approve.")


@alerts_router.post("/{alert_id}/corrections", response={201: AlertOut}, url_name="alert_correct",
                    summary="Send a correction of a sent alert", description=FOLLOW_UP_HELP)
@idempotent
def alert_correct(request: HttpRequest, alert_id: AlertId, payload: FollowUpIn,
                  idempotency_key: IdempotencyKey = None):
    return _follow_up(request, alert_id, payload, Alert.Kind.CORRECTION)


@alerts_router.post("/{alert_id}/updates", response={201: AlertOut}, url_name="alert_update",
                    summary="Send an update of a sent alert", description=FOLLOW_UP_HELP)
@idempotent
def alert_update(request: HttpRequest, alert_id: AlertId, payload: FollowUpIn,
                 idempotency_key: IdempotencyKey = None):
    return _follow_up(request, alert_id, payload, Alert.Kind.UPDATE)


@topics_router.get("", response=list[TopicOut], url_name="topic_list",
                   summary="The topics an alert can be filed under")
def topic_list(request: HttpRequest):
    return [topic_out(topic) for topic in Topic.objects.all()]


api.add_router("/alerts", alerts_router)
api.add_router("/topics", topics_router)


# --- Every error a problem --------------------------------------------------------------


@api.exception_handler(Problem)
def _problem(request: HttpRequest, exc: Problem) -> HttpResponse:
    return problem_response(request, exc)


@api.exception_handler(services.ApprovalRequired)
def _approval_required(request: HttpRequest, exc: services.ApprovalRequired) -> HttpResponse:
    # Raised before anything is written, or inside the write's transaction, which it
    # rolls back: the call has done nothing.
    return problem_response(request, Problem(
        409, f"{exc} Approve it in the admin, then publish or schedule it again.", slug="approval-required"))


@api.exception_handler(corrections.FollowUpRefused)
def _follow_up_refused(request: HttpRequest, exc: corrections.FollowUpRefused) -> HttpResponse:
    return problem_response(request, Problem(409, str(exc), slug="follow-up-refused"))


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [{"field": _field(error.get("loc", ())), "message": error.get("msg", "invalid")}
              for error in exc.errors]
    return problem_response(request, Problem(
        422, "The request has invalid fields: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors),
        slug="validation", errors=errors))


def _field(loc) -> str:
    """("body", "payload", "topics", 0) -> "topics.0"; ("path", "alert_id") -> "alert_id"."""
    parts = [str(part) for part in loc]
    if parts[:1] == ["body"]:
        parts = parts[2:] if len(parts) > 2 else parts[1:]
    else:
        parts = parts[1:]
    return ".".join(parts) or "body"


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return problem_response(request, Problem(
        401, "Send a valid, unrevoked API token: Authorization: Bearer sp_…", slug="unauthenticated",
        headers={"WWW-Authenticate": 'Bearer realm="api"'}))


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    slug = "malformed" if exc.status_code == 400 else ""
    detail = "The body is not valid JSON." if exc.status_code == 400 else str(exc)
    return problem_response(request, Problem(exc.status_code, detail, slug=slug))


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return problem_response(request, Problem(404, "No such alert.", slug="not-found"))


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return problem_response(request, Problem(413, "The body is too large.", slug="body-too-large"))
