"""Admin pieces for subscriber control: the suppression list (with a recorded lift),
and the data-rights actions the owner of admin.py attaches to SubscriberAdmin."""

from __future__ import annotations

import json
import logging

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from . import privacy, services
from .addresses import email_hmac
from .models import Suppression

logger = logging.getLogger(__name__)

# One JSON response with more than this many subscribers would be slow and unwieldy.
EXPORT_LIMIT = 500


class ActiveFilter(admin.SimpleListFilter):
    title = "active"
    parameter_name = "active"

    def lookups(self, request, model_admin):
        return [("yes", "Active"), ("no", "Lifted")]

    def queryset(self, request, queryset):
        if self.value() in {"yes", "no"}:
            return queryset.filter(lifted_at__isnull=self.value() == "yes")
        return queryset


class SuppressionLiftForm(forms.ModelForm):
    lift_reason = forms.CharField(
        required=False, max_length=400, widget=forms.Textarea(attrs={"rows": 3}),
        label="Lift with reason",
        help_text="To lift this suppression, say why (kept on record). Leave empty to keep it.",
    )

    class Meta:
        model = Suppression
        fields = ["lift_reason"]


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    """The suppression list. Rows are added by bounces, complaints and erasures, never
    by hand, and never deleted: lifting one keeps who lifted it and why."""

    list_display = ["__str__", "reason", "is_active", "created_at", "event_id", "lifted_at"]
    list_filter = ["reason", ActiveFilter, "created_at"]
    # Search by address: the term is hashed the same way (see get_search_results).
    search_fields = ["event_id"]
    search_help_text = "Enter an email address or a provider event id."
    form = SuppressionLiftForm
    readonly_fields = ["email_hmac", "reason", "detail", "event_id", "created_at",
                       "lifted_at", "lifted_by"]
    fields = [*readonly_fields, "lift_reason"]
    show_full_result_count = False

    @admin.display(boolean=True, description="active")
    def is_active(self, obj: Suppression) -> bool:
        return obj.is_active

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        if obj is not None and not obj.is_active:
            return [*self.readonly_fields, "lift_reason"]
        return self.readonly_fields

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if "@" in term:
            results = results | queryset.filter(email_hmac=email_hmac(term))
        return results, may_have_duplicates

    def save_model(self, request: HttpRequest, obj: Suppression, form, change: bool) -> None:
        # Never save the row itself: lifting goes through the service, which records
        # who and why and only ever touches an active suppression.
        reason = form.cleaned_data.get("lift_reason", "").strip()
        if change and reason and services.suppression_lift(
            suppression_id=obj.pk, user=request.user, reason=reason
        ):
            self.message_user(request, "Suppression lifted; sending to this address may resume.")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.action(description="Download the selected subscribers' data (JSON)", permissions=["view"])
def export_subscriber_data(modeladmin, request: HttpRequest, queryset: QuerySet):
    """A subject access request answered from the admin: one JSON file, a list with
    one export per selected subscriber (privacy.subscriber_data)."""
    ids = list(queryset.order_by("pk").values_list("pk", flat=True)[: EXPORT_LIMIT + 1])
    if len(ids) > EXPORT_LIMIT:
        modeladmin.message_user(request, f"Select at most {EXPORT_LIMIT} subscribers.", messages.ERROR)
        return None
    data = [privacy.subscriber_data(pk) for pk in ids]
    logger.info("Staff user %s exported the data of %d subscribers", request.user.pk, len(ids))
    response = HttpResponse(json.dumps(data, indent=2, cls=DjangoJSONEncoder),
                            content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="subscriber-data.json"'
    return response


@admin.action(description="Erase the selected subscribers (cannot be undone)", permissions=["delete"])
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
    erased = sum(services.subscriber_erase(subscriber_id=pk, by=request.user) for pk in ids)
    modeladmin.message_user(request, f"Erased {erased} subscriber(s); their addresses are suppressed.")
    return None
