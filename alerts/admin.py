"""The admin site: each capability registers its own models; this module loads them
all (Django's admin autodiscovery imports only `alerts.admin`) and puts the data-rights
actions on the subscriber list, where staff answer a reader's request."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import HttpRequest

from .common.addresses import email_hmac
from .digests import admin as digests_admin  # noqa: F401  (registers DigestRunAdmin)
from .models import Batch, Delivery, Subscriber
from .publishing import admin as publishing_admin  # noqa: F401  (registers AlertAdmin, TopicAdmin)
from .rights.admin import erase_subscribers, export_subscriber_data
from .sending import admin as sending_admin  # noqa: F401  (registers BatchAdmin, DeliveryAdmin)
from .sending.admin import DeliveryAdmin
from .subscribers.admin import SubscriberAdmin

SubscriberAdmin.actions = [*SubscriberAdmin.actions, export_subscriber_data, erase_subscribers]


def delivery_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
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


# The ledger's admin belongs to sending/, which the reliability work (issue 11) owns
# right now; the search is set here until it can move into DeliveryAdmin itself.
DeliveryAdmin.get_search_results = delivery_search_results
DeliveryAdmin.search_help_text = "Enter a subscriber's whole email address, or a provider message id."
