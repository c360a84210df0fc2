"""The engine's tables in the admin, read-only: the delivery ledger and the batches."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from ..common.addresses import email_hmac
from ..models import Batch, Delivery, Subscriber


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["alert", "subscriber", "status", "sent_at", "provider_message_id"]
    list_filter = ["status", "alert"]
    search_fields = ["message_id"]  # searched by index only: see get_search_results
    search_help_text = "Enter a subscriber's whole email address, or a provider message id."
    list_select_related = ["alert", "subscriber", "batch"]
    raw_id_fields = ["alert", "subscriber", "batch"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        """Search the ledger by index only: an address (through its keyed hash, then one
        probe of the unique (alert, subscriber) per alert) or a provider message id
        (exact, on the row or on its batch). Django's default `icontains` on
        `subscriber__email`, `message_id` and `batch__message_id` read the whole ledger,
        a million rows an alert, for every search."""
        term = search_term.strip()
        if not term:
            return queryset, False
        bare = term.strip("<>")
        spellings = [bare, f"<{bare}>"]
        results = queryset.filter(message_id__in=spellings)
        batches = list(Batch.objects.filter(message_id__in=spellings).values_list("pk", "alert_id"))
        if batches:
            results |= queryset.filter(message_id="", alert_id__in={alert for _, alert in batches},
                                       batch_id__in=[pk for pk, _ in batches])
        # Message ids look like addresses too ("20260101.abc@mg.example.com"): try both.
        reader = Subscriber.objects.filter(email_hmac=email_hmac(term)).values_list("pk", flat=True).first()
        if "@" in term and reader is not None:
            results |= queryset & Delivery.objects.of_subscriber(reader)
        return results, False


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ["pk", "alert", "status", "planned_count", "sent_count", "failed_count",
                    "attempts", "sent_at"]
    list_filter = ["status"]
    raw_id_fields = ["alert"]
    readonly_fields = [f.name for f in Batch._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
