"""Every error of the API as an RFC 9457 problem (`application/problem+json`): a
`type` URI naming the kind of problem, the HTTP status's `title`, a `detail` for the
person reading it, and `errors`, one per bad field, for validation.

Errors raised in our views are `Problem`s; ninja's own (validation, authentication)
are turned into problems by the API's exception handlers (views.py); and
`ProblemMiddleware` catches what never reaches the API's code: an unknown URL under
/api/v1/, a method a path does not take, a body over API_MAX_BODY_BYTES, and any
unexpected error (so even a bug answers a problem, logged as usual)."""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus

from django.conf import settings
from django.http import HttpRequest, HttpResponse

CONTENT_TYPE = "application/problem+json"
PREFIX = "/api/v1/"


def problem_type(slug: str) -> str:
    """A URI for one kind of problem. Tag URIs (RFC 4151) are identifiers that are
    never fetched; the README lists what each means."""
    return f"tag:stoppress,2026:problem/{slug}"


class Problem(Exception):
    """Raise in a view to answer with a problem. `slug` names the kind (a `type` URI);
    without one, the type is about:blank and the HTTP status says it all."""

    def __init__(self, status: int, detail: str = "", *, slug: str = "", title: str = "",
                 errors: list[dict] | None = None, headers: dict[str, str] | None = None) -> None:
        self.status, self.detail, self.slug = status, detail, slug
        self.title = title or _phrase(status)
        self.errors, self.headers = errors or [], headers or {}
        super().__init__(detail or self.title)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(request: HttpRequest, problem: Problem) -> HttpResponse:
    body = {"type": problem_type(problem.slug) if problem.slug else "about:blank",
            "title": problem.title, "status": problem.status, "detail": problem.detail,
            "instance": request.path}
    if problem.errors:
        body["errors"] = problem.errors
    response = HttpResponse(json.dumps(body), status=problem.status, content_type=CONTENT_TYPE)
    for name, value in problem.headers.items():
        response[name] = value
    return response


# What a plain Django error under /api/v1/ means to an API client.
FALLBACK_DETAIL = {
    400: "The request could not be read.",
    404: "There is nothing at this URL. The API's paths are listed at /api/v1/docs.",
    405: "This URL does not take that method.",
    500: "Something went wrong on our side; it has been logged. Retrying with the same "
         "Idempotency-Key is safe.",
}


class ProblemMiddleware:
    """Under /api/v1/, refuse a body larger than API_MAX_BODY_BYTES before anything
    reads it, and turn any error answer that is not yet a problem into one."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(PREFIX):
            return self.get_response(request)
        if _content_length(request) > settings.API_MAX_BODY_BYTES:
            return problem_response(request, Problem(
                413, f"The body may be at most {settings.API_MAX_BODY_BYTES} bytes.", slug="body-too-large"))
        response = self.get_response(request)
        if response.status_code < 400 or response.get("Content-Type", "").startswith(CONTENT_TYPE):
            return response
        status = response.status_code
        problem = problem_response(request, Problem(status, FALLBACK_DETAIL.get(status, "")))
        for header in ("Allow", "Retry-After", "WWW-Authenticate"):
            if header in response:
                problem[header] = response[header]
        return problem


def _content_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0
