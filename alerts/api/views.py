"""The publishing API, version 1, on django-ninja: each view checks its token's scope,
calls the editor's own services (publishing/services.py) and answers with the alert
as it now is, live progress included.

New endpoints on an alert (corrections and updates, say) join `alerts_router` with
the same three helpers: `_alert_or_404`, `_require_publish` and `@idempotent`."""

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

from ..models import Alert, ApiToken, Topic
from ..publishing import services
from ..publishing.progress import alert_progress
from .idempotency import idempotent
from .openapi import ProblemDocumentedAPI
from .problems import Problem, problem_response
from .schemas import AlertIn, AlertOut, ScheduleIn, TopicOut, topic_out
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
    body = AlertOut.of(alert, alert_progress(alert)).model_dump_json()
    response = HttpResponse(body, status=status, content_type="application/json")
    if status == 201:
        response["Location"] = reverse("api-v1:alert_read", args=[alert.pk])
    return response


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
        alert = services.alert_create(**payload.model_dump(include={
            "headline", "standfirst", "body", "url", "image_url", "image_alt"}), topics=topics)
        if payload.status == "published":
            services.alert_publish(alert_id=alert.pk)
        elif payload.status == "scheduled":
            services.alert_schedule(alert_id=alert.pk, when=payload.scheduled_for)
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
    return _alert_response(alert_id)


@alerts_router.post("/{alert_id}/schedule", response=AlertOut, url_name="alert_schedule",
                    summary="Publish a draft or scheduled alert at an embargo time")
@idempotent
def alert_schedule(request: HttpRequest, alert_id: AlertId, payload: ScheduleIn,
                   idempotency_key: IdempotencyKey = None):
    _require_publish(request)
    _alert_or_404(alert_id)
    if not services.alert_schedule(alert_id=alert_id, when=payload.scheduled_for):
        raise _refused(alert_id, "scheduled")
    return _alert_response(alert_id)


@alerts_router.post("/{alert_id}/stop", response=AlertOut, url_name="alert_stop",
                    summary="Stop sending (or cancel a scheduled alert)")
@idempotent
def alert_stop(request: HttpRequest, alert_id: AlertId, idempotency_key: IdempotencyKey = None):
    _require_publish(request)
    _alert_or_404(alert_id)
    if not services.alert_stop(alert_id=alert_id):
        raise _refused(alert_id, "stopped")
    return _alert_response(alert_id)


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
