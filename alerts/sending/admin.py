"""The engine's tables in the admin, read-only: the delivery ledger and the batches."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from ..models import Batch, Delivery


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["alert", "subscriber", "status", "sent_at", "provider_message_id"]
    list_filter = ["status", "alert"]
    search_fields = ["subscriber__email", "message_id", "batch__message_id"]
    list_select_related = ["alert", "subscriber", "batch"]
    raw_id_fields = ["alert", "subscriber", "batch"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ["pk", "alert", "status", "planned_count", "sent_count", "failed_count",
                    "attempts", "sent_at"]
    list_filter = ["status"]
    raw_id_fields = ["alert"]
    readonly_fields = [f.name for f in Batch._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
