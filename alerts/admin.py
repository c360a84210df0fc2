"""The admin site: each capability registers its own models; this module loads them
all (Django's admin autodiscovery imports only `alerts.admin`) and puts the data-rights
actions on the subscriber list, where staff answer a reader's request; and shows the
audit trail."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html_join

from .api import admin as api_admin  # noqa: F401  (registers ApiTokenAdmin)
from .digests import admin as digests_admin  # noqa: F401  (registers DigestRunAdmin)
from .models import AuditEvent
from .outbound import admin as outbound_admin  # noqa: F401  (registers the webhook endpoints and messages)
from .publishing import admin as publishing_admin  # noqa: F401  (registers AlertAdmin, TopicAdmin)
from .rights.admin import erase_subscribers, export_subscriber_data
from .sending import admin as sending_admin  # noqa: F401  (registers BatchAdmin, DeliveryAdmin)
from .subscribers.admin import SubscriberAdmin

SubscriberAdmin.actions = [*SubscriberAdmin.actions, export_subscriber_data, erase_subscribers]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The audit trail, read-only for everyone, superusers included: nothing here adds,
    changes or deletes an event (record_audit is the only writer)."""

    list_display = ["at", "action", "target_repr", "actor_name", "ip_address", "via"]
    list_filter = ["action", "via", "at"]
    search_fields = ["target_repr", "actor_name", "note"]
    date_hierarchy = "at"
    readonly_fields = ["at", "action", "via", "actor", "actor_name", "ip_address", "target_type", "target_id",
                       "target_repr", "changes_shown", "note"]
    fields = readonly_fields

    @admin.display(description="What changed")
    def changes_shown(self, obj: AuditEvent) -> str:
        rows = ((name, *value) if isinstance(value, list) and len(value) == 2 else (name, "", value)
                for name, value in (obj.changes or {}).items())
        return format_html_join("", "<div><strong>{}</strong>: {} &rarr; {}</div>", rows) or "–"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
