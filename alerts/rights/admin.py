"""Data rights from the admin: download the selected subscribers' data, or erase them
after a confirmation page. `alerts.admin` adds both to the subscriber list's actions."""

from __future__ import annotations

import json
import logging

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from ..models import RightsEvent
from .erase import subscriber_erase
from .export import subscriber_data
from .log import rights_record

logger = logging.getLogger(__name__)

# One JSON response with more than this many subscribers would be slow and unwieldy.
EXPORT_LIMIT = 500


@admin.action(description="Download the selected subscribers' data (JSON)", permissions=["export"])
def export_subscriber_data(modeladmin, request: HttpRequest, queryset: QuerySet):
    """A subject access request answered from the admin: one JSON file, a list with
    one export per selected subscriber (rights.export.subscriber_data)."""
    ids = list(queryset.order_by("pk").values_list("pk", flat=True)[: EXPORT_LIMIT + 1])
    if len(ids) > EXPORT_LIMIT:
        modeladmin.message_user(request, f"Select at most {EXPORT_LIMIT} subscribers.", messages.ERROR)
        return None
    with transaction.atomic():
        data = [subscriber_data(pk) for pk in ids]
        rights_record(kind=RightsEvent.Kind.EXPORT, via=RightsEvent.Via.ADMIN, subscriber_ids=ids,
                      actor=request.user)
    logger.info("Staff user %s exported the data of %d subscribers", request.user.pk, len(ids))
    response = HttpResponse(json.dumps(data, indent=2, cls=DjangoJSONEncoder),
                            content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="subscriber-data.json"'
    return response


@admin.action(description="Erase the selected subscribers (cannot be undone)", permissions=["erase"])
def erase_subscribers(modeladmin, request: HttpRequest, queryset: QuerySet):
    """Erase after a confirmation page, like Django's own delete action."""
    ids = list(queryset.values_list("pk", flat=True))
    if request.POST.get("confirm_erase") != "yes":
        context = {
            **modeladmin.admin_site.each_context(request),
            "title": "Erase subscribers?", "opts": modeladmin.model._meta, "ids": ids,
            "count": len(ids), "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/alerts/erase_subscribers.html", context)
    erased = sum(subscriber_erase(subscriber_id=pk, by=request.user, via=RightsEvent.Via.ADMIN) for pk in ids)
    modeladmin.message_user(request, f"Erased {erased} subscriber(s); their addresses are suppressed.")
    return None


@admin.register(RightsEvent)
class RightsEventAdmin(admin.ModelAdmin):
    """Every download and erasure of readers' data, read-only: the record that answers
    "who saw this reader's data, and when?"."""

    list_display = ["at", "kind", "via", "subscriber_ref", "count", "actor_name"]
    list_filter = ["kind", "via", "at"]
    search_fields = ["=subscriber_ref", "=actor_name"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
