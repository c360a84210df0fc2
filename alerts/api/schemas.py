"""What the API takes and gives, as pydantic schemas: the OpenAPI document at
/api/v1/openapi.json is generated from these."""

from __future__ import annotations

import unicodedata
from datetime import datetime, timedelta
from typing import Annotated, Literal

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import URLValidator
from django.urls import reverse
from django.utils import timezone
from ninja import Field, Schema
from pydantic import AfterValidator, AwareDatetime, ValidationInfo, field_validator

from ..models import Alert, Topic
from ..observability.time_to_inbox import InboxTimes, Quantiles
from ..publishing.progress import Progress

# An embargo further ahead than this is almost certainly a typo (a wrong year).
MAX_SCHEDULE_AHEAD = timedelta(days=366)


def _clean_text(value: str, *, multiline: bool) -> str:
    """Refuse what PostgreSQL or a mail header cannot carry: NUL and other control
    characters (line breaks only where the text may have them) and lone surrogates."""
    allowed = {"\n", "\r", "\t"} if multiline else set()
    if any(unicodedata.category(ch) in ("Cc", "Cs") and ch not in allowed for ch in value):
        raise ValueError("must not contain control characters")
    return value.strip()


def _line(value: str) -> str:
    return _clean_text(value, multiline=False)


def _paragraphs(value: str) -> str:
    return _clean_text(value, multiline=True)


def _url(value: str) -> str:
    value = _line(value)
    if value:
        try:
            URLValidator(schemes=["http", "https"])(value)
        except DjangoValidationError:
            raise ValueError("must be an http or https URL") from None
    return value


Line = Annotated[str, AfterValidator(_line)]
Url = Annotated[str, Field(max_length=500), AfterValidator(_url)]
Slug = Annotated[str, Field(min_length=1, max_length=60, pattern=r"^[-a-zA-Z0-9_]+$")]


def _future(when: datetime) -> datetime:
    now = timezone.now()
    if when <= now:
        raise ValueError("must be in the future (to send now, publish)")
    if when > now + MAX_SCHEDULE_AHEAD:
        raise ValueError("must be within a year from now")
    return when


Embargo = Annotated[AwareDatetime, AfterValidator(_future)]


class AlertIn(Schema):
    model_config = {"json_schema_extra": {"examples": [
        {"headline": "North Korea fires two ballistic missiles", "standfirst": "Launches come hours before the summit",
         "url": "https://news.example.com/world/north-korea-missiles", "topics": ["world"], "status": "published"},
        {"headline": "Budget: what it means for you", "status": "draft"},
    ]}}

    headline: Annotated[Line, Field(min_length=1, max_length=200, description="The email's subject.")]
    standfirst: Annotated[Line, Field(max_length=400, description="Preheader and summary.")] = ""
    body: Annotated[str, Field(max_length=20000), AfterValidator(_paragraphs)] = ""
    url: Url = Field("", description="The article, http or https.")
    image_url: Url = ""
    image_alt: Annotated[Line, Field(max_length=200)] = ""
    topics: list[Slug] = Field(default_factory=list, max_length=50,
                               description="Topic slugs (GET /api/v1/topics); none means every reader.")
    status: Literal["draft", "scheduled", "published"] = Field(
        "draft", description="draft: only save it; scheduled: publish at `scheduled_for`; published: "
                             "start sending now. Scheduling and publishing need a draft+publish token.")
    scheduled_for: Embargo | None = Field(
        None, validate_default=True,
        description="With status scheduled: when to publish, ISO 8601 with a UTC offset.")

    @field_validator("headline")
    @classmethod
    def _not_blank(cls, headline: str) -> str:
        if not headline:
            raise ValueError("must not be blank")
        return headline

    @field_validator("scheduled_for")
    @classmethod
    def _goes_with_scheduled(cls, when: datetime | None, info: ValidationInfo) -> datetime | None:
        status = info.data.get("status")
        if status == "scheduled" and when is None:
            raise ValueError("is required when status is scheduled")
        if status != "scheduled" and when is not None:
            raise ValueError("is only for status scheduled")
        return when


class FollowUpIn(Schema):
    """A correction or update: its own text; it goes to the original's recipients."""

    model_config = {"json_schema_extra": {"examples": [
        {"headline": "Only one missile was fired", "standfirst": "We said two earlier: it was one"}]}}

    headline: Annotated[Line, Field(min_length=1, max_length=200,
                                    description="The email's subject, after “Correction:” or “Update:”.")]
    standfirst: Annotated[Line, Field(max_length=400)] = ""
    body: Annotated[str, Field(max_length=20000), AfterValidator(_paragraphs)] = ""
    url: Url = Field("", description="The article; the original's when left out.")

    @field_validator("headline")
    @classmethod
    def _not_blank(cls, headline: str) -> str:
        if not headline:
            raise ValueError("must not be blank")
        return headline


class ScheduleIn(Schema):
    scheduled_for: Embargo = Field(description="When to publish, ISO 8601 with a UTC offset.")


class TopicOut(Schema):
    slug: str
    name: str


class ProgressOut(Schema):
    """Live figures from the alert's batches, as the editor's progress page shows them."""

    audience: int
    sent: int
    failed: int
    skipped: int
    remaining: int
    batches: int
    batches_open: int
    batches_failed: int
    batches_set_aside: int
    maybe_twice: int = Field(description="Readers sent again after a call timed out once sent.")
    rate_per_s: float
    eta_s: float | None
    first_handoff_s: float | None
    last_handoff_s: float | None
    waiting_since: datetime | None = Field(description="Since when the provider has been failing.")
    next_attempt_at: datetime | None


class QuantilesOut(Schema):
    count: int = Field(description="Readers whose delivery the provider reported.")
    p50: float | None = Field(description="Seconds from publishing to the mailbox.")
    p95: float | None
    p99: float | None


def _quantiles(figures: Quantiles) -> QuantilesOut:
    return QuantilesOut(count=figures.count, p50=figures.p50, p95=figures.p95, p99=figures.p99)


class TimeToInboxOut(Schema):
    """How long readers waited between publishing and delivery, as the progress page shows it."""

    overall: QuantilesOut
    by_mailbox: dict[str, QuantilesOut] = Field(
        description="Per mailbox provider: gmail, microsoft, yahoo, apple, other.")

    @classmethod
    def of(cls, times: InboxTimes) -> TimeToInboxOut | None:
        if not times.overall.count:
            return None
        return cls(overall=_quantiles(times.overall),
                   by_mailbox={key: _quantiles(value) for key, value in times.by_mailbox.items()})


AlertStatus = Literal["draft", "scheduled", "sending", "sent", "cancelled", "failed"]
DONE = {Alert.Status.SENT, Alert.Status.CANCELLED, Alert.Status.FAILED}


class AlertOut(Schema):
    id: int
    headline: str
    standfirst: str
    body: str
    url: str
    image_url: str
    image_alt: str
    topics: list[str]
    status: AlertStatus
    done: bool = Field(description="True once sent, cancelled or failed: nothing more will change.")
    created_at: datetime
    scheduled_for: datetime | None
    published_at: datetime | None
    finished_at: datetime | None
    cancelled_at: datetime | None
    progress: ProgressOut
    kind: Literal["normal", "correction", "update"] = Field(
        description="normal, or a correction or update of the alert `follow_up_of`.")
    follow_up_of: int | None = Field(description="The original alert's id, for a correction or update.")
    follow_ups: list[int] = Field(description="The ids of this alert's corrections and updates, oldest first.")
    time_to_inbox: TimeToInboxOut | None = Field(
        description="Seconds from publishing to delivery; null until a delivery is reported.")
    links: dict[str, str]

    @classmethod
    def of(cls, alert: Alert, progress: Progress, *, follow_ups: list[int] = (),
           inbox: InboxTimes | None = None) -> AlertOut:
        figures = {name: getattr(progress, name) for name in ProgressOut.model_fields}
        fields = {name: getattr(alert, name) for name in (
            "id", "headline", "standfirst", "body", "url", "image_url", "image_alt", "status",
            "created_at", "scheduled_for", "published_at", "finished_at", "cancelled_at")}
        return cls(**fields, topics=[topic.slug for topic in alert.topics.all()],
                   done=alert.status in DONE, progress=ProgressOut(**figures),
                   kind=alert.kind, follow_up_of=alert.follow_up_of_id, follow_ups=list(follow_ups),
                   time_to_inbox=TimeToInboxOut.of(inbox) if inbox is not None else None,
                   links={"self": reverse("api-v1:alert_read", args=[alert.pk])})


def topic_out(topic: Topic) -> TopicOut:
    return TopicOut(slug=topic.slug, name=topic.name)


class FieldError(Schema):
    field: str = Field(description="Where: a body field (topics.0), a path or query parameter, or a header.")
    message: str


class ProblemOut(Schema):
    """RFC 9457 problem details, served as application/problem+json."""

    type: str = Field(description="A URI naming the kind of problem; about:blank when the status says it all.")
    title: str
    status: int
    detail: str
    instance: str
    errors: list[FieldError] = Field(default_factory=list)
