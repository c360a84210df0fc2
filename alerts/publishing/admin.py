"""The editor's admin: alerts written, previewed, tested, published, scheduled,
stopped and followed live; and the topics they are filed under."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST

from ..common.addresses import email_hmac
from ..common.tokens import link_tokens
from ..emails import alert_message
from ..models import Alert, Delivery, Topic
from ..observability import charts
from ..observability.deliverability import rolling_rates
from ..observability.time_to_inbox import alert_inbox_times
from . import services
from .audience import audience_count
from .progress import alert_engagement, alert_progress

# Email HTML carries inline styles (as email must) and remote images; nothing else.
PREVIEW_POLICY = ("sandbox; default-src 'none'; img-src https: data:; style-src 'unsafe-inline'; "
                  "font-src https: data:; frame-ancestors 'self'; form-action 'none'; base-uri 'none'")


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "position"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["headline", "status", "published_at", "audience_size", "author"]
    list_filter = ["status", "topics", "published_at"]
    search_fields = ["headline", "standfirst"]
    filter_horizontal = ["topics"]
    fields = ["headline", "standfirst", "body", "url", "image_url", "image_alt", "topics"]
    readonly_fields = ["status", "author", "published_by", "published_at", "scheduled_for",
                       "first_handoff_at", "last_handoff_at", "finished_at", "audience_size"]
    change_form_template = "admin/alerts/alert/change_form.html"
    # A link typed without a scheme is taken as https (Django 6.0's default, now).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

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
            return
        # The form was loaded before now: the alert may have been scheduled, or sent,
        # since. The service decides on the row as it is.
        outcome = services.alert_save_edit(alert=obj, user=request.user)
        if outcome == services.EditOutcome.REFUSED:
            raise PermissionDenied("This alert has been sent meanwhile and can no longer change.")
        if outcome == services.EditOutcome.RETURNED_TO_DRAFT:
            messages.warning(request, "The alert was scheduled; your change has returned it to draft. "
                                      "Someone with the publish permission needs to schedule it again.")

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/preview/", wrap(self.preview_view), name="alerts_alert_preview"),
            path("<int:pk>/preview/html/", wrap(self.preview_html_view), name="alerts_alert_preview_html"),
            path("<int:pk>/send-test/", wrap(self.send_test_view), name="alerts_alert_send_test"),
            path("<int:pk>/publish/", wrap(self.publish_view), name="alerts_alert_publish"),
            path("<int:pk>/schedule/", wrap(self.schedule_view), name="alerts_alert_schedule"),
            path("<int:pk>/stop/", wrap(self.stop_view), name="alerts_alert_stop"),
            path("<int:pk>/retry-failed/", wrap(self.retry_failed_view), name="alerts_alert_retry_failed"),
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
            messages.success(request, f"A test copy is on its way to {request.user.email}.")
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
            if services.alert_publish(alert_id=alert.pk, user=request.user):
                messages.success(request, "Published: the alert is on its way to subscribers.")
            else:
                messages.warning(request, "This alert was already published.")
            return redirect("admin:alerts_alert_progress", alert.pk)
        return TemplateResponse(request, "admin/alerts/alert/publish.html", self._context(
            request, alert, "Publish this alert now?", audience=audience_count(alert), rates=rates))

    def schedule_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        alert = self._alert(request, pk)
        self._require_publisher(request)
        form = ScheduleForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            if services.alert_schedule(alert_id=alert.pk, when=form.cleaned_data["when"], user=request.user):
                messages.success(request, "Scheduled.")
            return redirect("admin:alerts_alert_change", alert.pk)
        return TemplateResponse(request, "admin/alerts/alert/schedule.html", self._context(
            request, alert, "Schedule this alert", form=form, audience=audience_count(alert)))

    @method_decorator(require_POST)
    def stop_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        alert = self._alert(request, pk)
        self._require_publisher(request)
        if services.alert_stop(alert_id=alert.pk):
            messages.warning(request, "Sending stopped. Batches already with the provider still arrive.")
        return redirect("admin:alerts_alert_progress", alert.pk)

    @method_decorator(require_POST)
    def retry_failed_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        alert = self._alert(request, pk)
        self._require_publisher(request)
        queued = services.alert_retry_failed(alert_id=alert.pk)
        if queued:
            messages.success(request, f"{queued} failed batch(es) are being sent again.")
        else:
            messages.info(request, "No batch of this alert has failed.")
        return redirect("admin:alerts_alert_progress", alert.pk)

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
            request, alert, f"Sending: {alert.headline}", progress=alert_progress(alert),
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


class ScheduleForm(forms.Form):
    when = forms.DateTimeField(
        label="Publish at", help_text="In UTC, e.g. 2026-11-27 06:30",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )

    def clean_when(self):
        when = self.cleaned_data["when"]
        if when <= timezone.now():
            raise forms.ValidationError("Choose a time in the future, or publish now.")
        return when
