"""Webhook endpoints in the admin (each with its own secret and chosen events), and
the outbox of what was sent to them, with "Redeliver"."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from ..models import WebhookAttempt, WebhookEndpoint, WebhookMessage
from .delivery import new_secret, webhook_redeliver


class EndpointForm(forms.ModelForm):
    events = forms.MultipleChoiceField(choices=WebhookEndpoint.Event.choices, widget=forms.CheckboxSelectMultiple,
                                       help_text="correction.sent is reserved: nothing sends it yet.")

    class Meta:
        model = WebhookEndpoint
        fields = ["name", "url", "events", "enabled"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = ["name", "url", "enabled", "chosen_events", "created_at"]
    readonly_fields = ["secret", "created_at"]

    @admin.display(description="events")
    def chosen_events(self, endpoint: WebhookEndpoint) -> str:
        return ", ".join(endpoint.events)

    def get_fields(self, request: HttpRequest, obj=None):
        fields = ["name", "url", "events", "enabled"]
        return fields + (self.readonly_fields if obj else [])

    def save_model(self, request: HttpRequest, obj: WebhookEndpoint, form, change: bool) -> None:
        if not change:
            obj.secret = new_secret()
        super().save_model(request, obj, form, change)


class AttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = readonly_fields = ["at", "status_code", "error", "duration_ms"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(WebhookMessage)
class WebhookMessageAdmin(admin.ModelAdmin):
    inlines = [AttemptInline]
    list_display = ["event_type", "endpoint", "status", "attempts", "last_status_code", "created_at", "delivered_at"]
    list_filter = ["status", "event_type", "endpoint"]
    search_fields = ["message_id"]
    readonly_fields = ["endpoint", "message_id", "event_type", "payload", "status", "attempts", "next_attempt_at",
                       "last_status_code", "last_error", "created_at", "delivered_at"]
    fields = readonly_fields
    actions = ["redeliver"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.action(description="Redeliver the selected messages now", permissions=["view"])
    def redeliver(self, request: HttpRequest, queryset) -> None:
        count = webhook_redeliver(message_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{count} message(s) queued again.", messages.SUCCESS)
