"""The editor's admin: alerts written, previewed, tested, published, scheduled,
stopped and followed live; and the topics they are filed under."""

from __future__ import annotations

import zoneinfo

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html_join
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST

from ..common.addresses import email_hmac
from ..common.audit import record_audit
from ..common.tokens import link_tokens
from ..emails import alert_message
from ..models import Alert, AuditEvent, Delivery, Topic
from ..observability import charts
from ..observability.deliverability import rolling_rates
from ..observability.time_to_inbox import alert_inbox_times
from . import corrections, services
from .audience import audience_count
from .progress import alert_engagement, alert_progress

# Email HTML carries inline styles (as email must) and remote images; nothing else.
PREVIEW_POLICY = ("sandbox; default-src 'none'; img-src https: data:; style-src 'unsafe-inline'; "
                  "font-src https: data:; frame-ancestors 'self'; form-action 'none'; base-uri 'none'")


# What the progress page says the alert is doing; the page's script changes it live.
PROGRESS_TITLES = {Alert.Status.SENDING: "Sending", Alert.Status.SENT: "Sent", Alert.Status.CANCELLED: "Stopped",
                   Alert.Status.FAILED: "Failed", Alert.Status.SCHEDULED: "Scheduled", Alert.Status.DRAFT: "Draft"}


# How much of each a phone shows (rules of thumb for iOS and Android mail at portrait
# width, in characters): the headline is the subject of the notification and the inbox
# row, the standfirst the preview line under it. Shown as counters while typing.
SHOWN = {"headline": (40, "a phone's lock screen or inbox list"),
         "standfirst": (90, "the preview line under it")}


def counted(widget: forms.Widget, name: str) -> forms.Widget:
    shown, where = SHOWN[name]
    widget.attrs.update({"data-shown": str(shown), "data-shown-where": where})
    return widget


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "position"]
    prepopulated_fields = {"slug": ["name"]}

    def save_model(self, request: HttpRequest, obj: Topic, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        record_audit(action=AuditEvent.Action.TOPIC_CHANGED, request=request, target=obj,
                     changes=_form_changes(form, every=not change))

    def delete_model(self, request: HttpRequest, obj: Topic) -> None:
        record_audit(action=AuditEvent.Action.TOPIC_DELETED, request=request, target=obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for topic in queryset:
            record_audit(action=AuditEvent.Action.TOPIC_DELETED, request=request, target=topic)
        super().delete_queryset(request, queryset)


def _form_changes(form, *, every: bool = False) -> dict[str, list]:
    """{"field": [before, after]} of a submitted form: the fields it changed (or, with
    `every`, all it holds, as for something new). Topics by name."""
    changes = {}
    for name in (form.fields if every else form.changed_data):
        before, after = form.initial.get(name), form.cleaned_data.get(name)
        if name == "topics":
            before = sorted(str(t) for t in Topic.objects.filter(pk__in=[getattr(t, "pk", t) for t in before or []]))
            after = sorted(str(t) for t in after or [])
        changes[name] = [None if every else before, after]
    return changes


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["headline", "kind", "status", "published_at", "audience_size", "author"]
    list_filter = ["status", "kind", "topics", "published_at"]
    search_fields = ["headline", "standfirst"]
    filter_horizontal = ["topics"]
    fields = ["headline", "standfirst", "body", "url", "image_url", "image_alt", "topics"]
    readonly_fields = ["status", "kind", "follow_up_of", "follow_ups_sent", "approved_by", "approved_at", "scheduled_local", "author", "published_by", "published_at", "scheduled_for",
                       "first_handoff_at", "last_handoff_at", "finished_at", "audience_size"]
    change_form_template = "admin/alerts/alert/change_form.html"
    # A link typed without a scheme is taken as https (Django 6.0's default, now).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    @admin.display(description="Corrections and updates")
    def follow_ups_sent(self, obj: Alert) -> str:
        follow_ups = list(obj.follow_ups.order_by("created_at")) if obj.pk else []
        return format_html_join(", ", '<a href="{}">{}: {}</a>', (
            (reverse("admin:alerts_alert_change", args=[f.pk]), f.get_kind_display(), f.headline)
            for f in follow_ups)) or "–"

    def formfield_for_dbfield(self, db_field, request: HttpRequest, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name in SHOWN and field is not None:
            counted(field.widget, db_field.name)
        return field

    @admin.display(description="Scheduled for (newsroom time)")
    def scheduled_local(self, obj: Alert) -> str:
        return _local(obj.scheduled_for) if obj.scheduled_for else "–"

    def get_fields(self, request: HttpRequest, obj=None):
        return self.fields + (self.readonly_fields if obj else [])

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        # Once an alert has left, what subscribers received must stay as it was.
        if obj is not None and obj.status not in (Alert.Status.DRAFT, Alert.Status.SCHEDULED):
            return False
        # A scheduled alert is one a publisher approved: the sweeper will send whatever
        # it then says, so changing it takes the publish permission too.
        if obj is not None and obj.status == Alert.Status.SCHEDULED and \
                not request.user.has_perm("alerts.publish_alert"):
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        if obj is not None and obj.status != Alert.Status.DRAFT:
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Alert, form, change: bool) -> None:
        if not change:
            obj.author = request.user
            super().save_model(request, obj, form, change)
            record_audit(action=AuditEvent.Action.ALERT_CREATED, request=request, target=obj,
                         changes=_form_changes(form, every=True))
            return
        # The form was loaded before now: the alert may have been scheduled, or sent,
        # since. The service decides on the row as it is.
        outcome = services.alert_save_edit(alert=obj, user=request.user)
        if outcome == services.EditOutcome.REFUSED:
            raise PermissionDenied("This alert has been sent meanwhile and can no longer change.")
        changes = _form_changes(form)
        if outcome == services.EditOutcome.RETURNED_TO_DRAFT:
            messages.warning(request, "The alert was scheduled; your change has returned it to draft. "
                                      "Someone with the publish permission needs to schedule it again.")
            changes["status"] = [Alert.Status.SCHEDULED, Alert.Status.DRAFT]
        if changes:
            record_audit(action=AuditEvent.Action.ALERT_EDITED, request=request, target=obj, changes=changes)

    def delete_model(self, request: HttpRequest, obj: Alert) -> None:
        record_audit(action=AuditEvent.Action.ALERT_DELETED, request=request, target=obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for alert in queryset:
            record_audit(action=AuditEvent.Action.ALERT_DELETED, request=request, target=alert)
        super().delete_queryset(request, queryset)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/preview/", wrap(self.preview_view), name="alerts_alert_preview"),
            path("<int:pk>/preview/html/", wrap(self.preview_html_view), name="alerts_alert_preview_html"),
            path("<int:pk>/send-test/", wrap(self.send_test_view), name="alerts_alert_send_test"),
            path("<int:pk>/publish/", wrap(self.publish_view), name="alerts_alert_publish"),
            path("<int:pk>/approve/", wrap(self.approve_view), name="alerts_alert_approve"),
            path("<int:pk>/schedule/", wrap(self.schedule_view), name="alerts_alert_schedule"),
            path("<int:pk>/stop/", wrap(self.stop_view), name="alerts_alert_stop"),
            path("<int:pk>/retry-failed/", wrap(self.retry_failed_view), name="alerts_alert_retry_failed"),
            path("<int:pk>/follow-up/<str:kind>/", wrap(self.follow_up_view), name="alerts_alert_follow_up"),
            path("<int:pk>/progress/", wrap(self.progress_view), name="alerts_alert_progress"),
            path("<int:pk>/progress.json", wrap(self.progress_json_view), name="alerts_alert_progress_json"),
            # Observability: the charts (alerts/observability/charts.py).
            path("<int:pk>/charts.json", wrap(self.charts_json_view), name="alerts_alert_charts_json"),
            path("dashboard/", wrap(self.dashboard_view), name="alerts_alert_dashboard"),
        ] + super().get_urls()

    def _alert(self, request: HttpRequest, pk: int) -> Alert:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(Alert, pk=pk)

    def _require_publisher(self, request: HttpRequest) -> None:
        if not request.user.has_perm("alerts.publish_alert"):
            raise PermissionDenied("Publishing needs the 'Can publish, schedule and stop alerts' permission.")

    def _context(self, request: HttpRequest, alert: Alert, title: str, **extra) -> dict:
        return {**self.admin_site.each_context(request), "opts": self.model._meta,
                "original": alert, "alert": alert, "title": title,
                "can_publish": request.user.has_perm("alerts.publish_alert"), **extra}

    def preview_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        alert = self._alert(request, pk)
        rendered = alert_message(alert, to="preview@example.com", token=link_tokens.make_token(0))
        return TemplateResponse(request, "admin/alerts/alert/preview.html", self._context(
            request, alert, f"Preview: {alert.headline}", subject=rendered.subject, text=rendered.body))

    @method_decorator(xframe_options_sameorigin)
    def preview_html_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The email's HTML, for the preview page's iframes. It is the editors' text
        and the image they linked, shown on the admin's origin: so it is sandboxed
        (an opaque origin, no scripts, no forms, even when opened directly) and may
        load nothing but images and its own inline styles."""
        alert = self._alert(request, pk)
        message = alert_message(alert, to="preview@example.com", token=link_tokens.make_token(0))
        response = HttpResponse(message.alternatives[0][0])
        response["Content-Security-Policy"] = PREVIEW_POLICY
        return response

    @method_decorator(require_POST)
    def send_test_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        alert = self._alert(request, pk)
        if not request.user.email:
            messages.error(request, "Add an email address to your user account to receive tests.")
        else:
            services.alert_send_test(alert_id=alert.pk, to=request.user.email)
            record_audit(action=AuditEvent.Action.ALERT_TEST_SENT, request=request, target=alert,
                         note=f"to {request.user.email}")
            messages.success(request, f"A test copy is on its way to {request.user.email}.")
        return redirect("admin:alerts_alert_change", alert.pk)

    @method_decorator(require_POST)
    def approve_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """A second editor (with the publish permission, never the author) approves
        the alert as it now reads; an edit afterwards clears the approval."""
        alert = self._alert(request, pk)
        self._require_publisher(request)
        try:
            approved = services.alert_approve(alert_id=alert.pk, user=request.user)
        except services.ApprovalRefused as refused:
            messages.error(request, str(refused))
            return redirect("admin:alerts_alert_change", alert.pk)
        if approved:
            record_audit(action=AuditEvent.Action.APPROVED, request=request, target=alert)
            messages.success(request, "Approved: it can now be published or scheduled.")
        return redirect("admin:alerts_alert_change", alert.pk)

    def publish_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        alert = self._alert(request, pk)
        self._require_publisher(request)
        # Observability: above DELIVERABILITY_COMPLAINT_CONFIRM, the editor confirms
        # with the complaint rate in front of them (observability/deliverability.py).
        rates = rolling_rates()
        unconfirmed = rates.confirm and not request.POST.get("confirm_complaints")
        if request.method == "POST" and unconfirmed:
            messages.error(request, "Tick the box to confirm you have seen the complaint rate.")
        if request.method == "POST" and not unconfirmed:
            try:
                published = services.alert_publish(alert_id=alert.pk, user=request.user)
            except services.ApprovalRequired as error:
                messages.error(request, str(error))
                return redirect("admin:alerts_alert_change", alert.pk)
            if published:
                record_audit(action=AuditEvent.Action.ALERT_PUBLISHED, request=request, target=alert)
                messages.success(request, "Published: the alert is on its way to subscribers.")
            else:
                messages.warning(request, "This alert was already published.")
            return redirect("admin:alerts_alert_progress", alert.pk)
        audience = audience_count(alert)
        return TemplateResponse(request, "admin/alerts/alert/publish.html", self._context(
            request, alert, "Publish this alert now?", audience=audience, rates=rates,
            needs_approval=self._needs_approval(alert, audience)))

    def _needs_approval(self, alert: Alert, audience: int) -> bool:
        limit = settings.APPROVAL_REQUIRED_ABOVE
        return bool(limit) and audience > limit and alert.approved_at is None and alert.status == Alert.Status.DRAFT

    def render_change_form(self, request: HttpRequest, context: dict, *args, obj=None, **kwargs):
        alert = obj
        if alert is not None and alert.status in (Alert.Status.DRAFT, Alert.Status.SCHEDULED) \
                and settings.APPROVAL_REQUIRED_ABOVE:
            context["needs_approval"] = self._needs_approval(alert, audience_count(alert))
            context["approval_limit"] = settings.APPROVAL_REQUIRED_ABOVE
            context["can_approve"] = (request.user.has_perm("alerts.publish_alert") and alert.approved_at is None
                                      and alert.author_id != request.user.pk)
        return super().render_change_form(request, context, *args, obj=obj, **kwargs)

    def schedule_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        alert = self._alert(request, pk)
        self._require_publisher(request)
        form = ScheduleForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                scheduled = services.alert_schedule(alert_id=alert.pk, when=form.cleaned_data["when"],
                                                    user=request.user)
            except services.ApprovalRequired as error:
                messages.error(request, str(error))
                return redirect("admin:alerts_alert_change", alert.pk)
            if scheduled:
                record_audit(action=AuditEvent.Action.ALERT_SCHEDULED, request=request, target=alert,
                             changes={"scheduled_for": [alert.scheduled_for, form.cleaned_data["when"]]})
                messages.success(request, f"Scheduled for {_local(form.cleaned_data['when'])}.")
            return redirect("admin:alerts_alert_change", alert.pk)
        return TemplateResponse(request, "admin/alerts/alert/schedule.html", self._context(
            request, alert, "Schedule this alert", form=form, audience=audience_count(alert),
            scheduled_local=_local(alert.scheduled_for) if alert.scheduled_for else ""))

    @method_decorator(require_POST)
    def stop_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        alert = self._alert(request, pk)
        self._require_publisher(request)
        if services.alert_stop(alert_id=alert.pk):
            record_audit(action=AuditEvent.Action.ALERT_CANCELLED, request=request, target=alert,
                         changes={"status": [alert.status, Alert.Status.CANCELLED]})
            messages.warning(request, "Sending stopped. Batches already with the provider still arrive.")
        return redirect("admin:alerts_alert_progress", alert.pk)

    @method_decorator(require_POST)
    def retry_failed_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        alert = self._alert(request, pk)
        self._require_publisher(request)
        queued = services.alert_retry_failed(alert_id=alert.pk)
        if queued:
            record_audit(action=AuditEvent.Action.ALERT_RETRIED, request=request, target=alert,
                         changes={"batches": queued})
            messages.success(request, f"{queued} failed batch(es) are being sent again.")
        else:
            messages.info(request, "No batch of this alert has failed.")
        return redirect("admin:alerts_alert_progress", alert.pk)

    def follow_up_view(self, request: HttpRequest, pk: int, kind: str) -> HttpResponse:
        """"Send a correction" / "Send an update": the form, then the follow-up sent at
        once to the readers who received this alert (publishing/corrections.py)."""
        original = self._alert(request, pk)
        self._require_publisher(request)
        if kind not in corrections.KINDS:
            raise Http404("A follow-up is a correction or an update.")
        refusal = corrections.follow_up_refusal(original)
        if refusal:
            messages.error(request, refusal)
            return redirect("admin:alerts_alert_change", original.pk)
        initial = {"headline": original.headline, "standfirst": original.standfirst, "url": original.url}
        form = FollowUpForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                follow_up = corrections.send_follow_up(original, kind=kind, by=request.user, **form.cleaned_data)
            except corrections.FollowUpRefused as refused:
                messages.error(request, str(refused))
                return redirect("admin:alerts_alert_change", original.pk)
            record_audit(action=AuditEvent.Action.FOLLOW_UP_SENT, request=request, target=follow_up,
                         changes={"kind": kind, "follow_up_of": original.pk, **_form_changes(form, every=True)},
                         note=f"{follow_up.get_kind_display()} of alert {original.pk}: {original.headline}")
            if follow_up.status == Alert.Status.DRAFT:
                record_audit(action=AuditEvent.Action.APPROVAL_REQUESTED, request=request, target=follow_up)
                messages.warning(request, f"The {follow_up.get_kind_display().lower()} would reach more than "
                                          f"{settings.APPROVAL_REQUIRED_ABOVE} readers: it waits for another "
                                          "editor's approval before it can be published.")
                return redirect("admin:alerts_alert_change", follow_up.pk)
            messages.success(request, f"{follow_up.get_kind_display()} sent to the readers who received the alert.")
            return redirect("admin:alerts_alert_progress", follow_up.pk)
        label = Alert.Kind(kind).label
        return TemplateResponse(request, "admin/alerts/alert/follow_up.html", self._context(
            request, original, f"Send {'a' if kind == 'correction' else 'an'} {label.lower()}", form=form,
            kind=kind, kind_label=label, audience=corrections.follow_up_audience_count(original),
            retention_days=settings.DELIVERY_RETENTION_DAYS))

    def progress_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        alert = self._alert(request, pk)
        lookup = request.GET.get("q", "").strip()
        delivery = None
        if lookup:
            # By the address's keyed hash (indexed, and case-insensitive like the
            # address itself), then one probe of the ledger's (alert, subscriber).
            delivery = (Delivery.objects.filter(alert=alert, subscriber__email_hmac=email_hmac(lookup))
                        .select_related("subscriber", "batch").first())
        return TemplateResponse(request, "admin/alerts/alert/progress.html", self._context(
            request, alert, f"{PROGRESS_TITLES.get(alert.status, 'Sending')}: {alert.headline}",
            titles={status: f"{word}: {alert.headline}" for status, word in PROGRESS_TITLES.items()},
            progress=alert_progress(alert),
            engagement=alert_engagement(alert), lookup=lookup, delivery=delivery,
            inbox=alert_inbox_times(alert), charts=charts.alert_charts(alert),
            give_up_minutes=settings.SEND_GIVE_UP_AFTER_SECONDS // 60))

    def progress_json_view(self, request: HttpRequest, pk: int) -> JsonResponse:
        alert = self._alert(request, pk)
        return JsonResponse({**alert_progress(alert).as_dict(),
                             "time_to_inbox": alert_inbox_times(alert, cached=True).as_dict()})


    def charts_json_view(self, request: HttpRequest, pk: int) -> JsonResponse:
        return JsonResponse(charts.alert_charts(self._alert(request, pk), cached=True))

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """Time to inbox and engagement of the latest alerts; subscribers over time."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        days = DashboardForm(request.GET).cleaned_days()
        return TemplateResponse(request, "admin/alerts/alert/dashboard.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta, "title": "Dashboard",
            "recent": charts.recent_alerts(), "readers": charts.subscriber_series(days), "days": days})


class DashboardForm(forms.Form):
    days = forms.IntegerField(min_value=7, max_value=365, required=False)

    def cleaned_days(self) -> int:
        return (self.cleaned_data.get("days") if self.is_valid() else None) or 90


class FollowUpForm(forms.Form):
    headline = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"class": "vLargeTextField"}),
                               help_text="The subject says \u201cCorrection:\u201d or "
                                                         "\u201cUpdate:\u201d before it.")
    standfirst = forms.CharField(max_length=400, required=False, widget=forms.Textarea(attrs={"rows": 2}),
                                 help_text="What changed, in a sentence: the preheader readers see first.")
    body = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 6}))
    url = forms.URLField(label="Article URL", max_length=500, required=False, assume_scheme="https")


def _local(when) -> str:
    """A time as the newsroom reads it: "27 November 2026, 06:30 GMT"."""
    local = when.astimezone(zoneinfo.ZoneInfo(settings.PUBLICATION_TIME_ZONE))
    return f"{local.day} {local:%B %Y, %H:%M %Z}"


for _name in SHOWN:
    counted(FollowUpForm.base_fields[_name].widget, _name)


class ScheduleForm(forms.Form):
    """The embargo time, typed in the newsroom's own time (PUBLICATION_TIME_ZONE) and
    stored in UTC. A time that does not exist or happens twice there (the clocks going
    forward or back) is refused with a message rather than guessed."""

    when = forms.DateTimeField(label="Publish at", widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.zone = zoneinfo.ZoneInfo(settings.PUBLICATION_TIME_ZONE)
        now = timezone.now().astimezone(self.zone)
        self.fields["when"].help_text = (
            f"In the newsroom's time, {settings.PUBLICATION_TIME_ZONE} ({now:%Z}, UTC{now.isoformat()[-6:]}; "
            f"it is {now:%H:%M} there now), e.g. {now:%Y-%m-%d} 06:30")

    def full_clean(self) -> None:
        # Naive times typed in the form are read in the newsroom's zone.
        with timezone.override(self.zone):
            super().full_clean()

    def clean_when(self):
        when = self.cleaned_data["when"]
        if when <= timezone.now():
            raise forms.ValidationError("Choose a time in the future, or publish now.")
        return when
