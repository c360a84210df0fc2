"""The admin of readers: subscribers and their consent history (read-only), the
versioned wording, and the suppression list (lifting an entry needs a written reason,
which is kept). The data-rights actions on subscribers come from `alerts.rights`."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from ..common.addresses import email_hmac
from ..common.audit import record_audit
from ..common.suppression import suppression_lift
from ..models import AuditEvent, ConsentEvent, Subscriber, Suppression, Wording
from .attribution import top_campaigns, top_signup_pages
from .services import subscriber_revoke_links


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class ConsentEventInline(ReadOnlyInline):
    model = ConsentEvent
    fields = ["created_at", "purpose", "action", "source", "wording", "privacy_notice",
              "ip_address", "user_agent", "note"]
    readonly_fields = fields
    ordering = ["created_at", "id"]
    verbose_name_plural = "Consent history (evidence, read-only)"


@admin.register(Subscriber)
class SubscriberAdmin(admin.ModelAdmin):
    list_display = ["email", "status", "marketing_consent", "frequency", "created_at", "confirmed_at"]
    list_filter = ["status", "marketing_consent", "frequency", "source", "created_at",
                   "confirmed_at", "topics"]
    search_fields = ["email"]
    search_help_text = "Enter a whole email address."
    date_hierarchy = "created_at"
    readonly_fields = ["email", "email_hmac", "status", "marketing_consent", "source",
                       "created_at", "confirmed_at", "unsubscribed_at", "last_digest_at",
                       "signup_page", "signup_referrer", "utm_source", "utm_medium", "utm_campaign",
                       "reengage_asked_at", "reengage_kept_at"]
    fields = readonly_fields[:2] + ["frequency", "topics", "time_zone"] + readonly_fields[2:]
    filter_horizontal = ["topics"]
    inlines = [ConsentEventInline]
    show_full_result_count = False  # COUNT(*) on a million rows per page view is wasteful

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Subscribers arrive through a consent flow (form, import), never by hand.
        return False

    def get_urls(self):
        view = self.admin_site.admin_view(self.top_articles_view)
        return [path("top-articles/", view, name="alerts_subscriber_top_articles")] + super().get_urls()

    PERIODS = {"7": 7, "30": 30, "365": 365, "all": None}

    def top_articles_view(self, request: HttpRequest) -> HttpResponse:
        """"Top articles by signups": the pages readers signed up on, with campaigns."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        period = request.GET.get("days", "30")
        days = self.PERIODS.get(period, 30)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "title": "Top articles by signups", "pages": top_signup_pages(days=days),
                   "campaigns": top_campaigns(days=days), "period": period if period in self.PERIODS else "30",
                   "periods": [("7", "7 days"), ("30", "30 days"), ("365", "a year"), ("all", "ever")]}
        return TemplateResponse(request, "admin/alerts/subscriber/top_articles.html", context)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # Deleting the row would bypass erasure: no erased-address suppression (so an
        # import could add them back), their ledger rows orphaned, and the address
        # left in the admin's own log. Staff erase instead (the "Erase" action).
        return False

    def has_export_permission(self, request: HttpRequest) -> bool:
        # Seeing a reader is not exporting them: bulk downloads of personal data need
        # a permission of their own.
        return request.user.has_perm("alerts.export_subscriber_data")

    def has_erase_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("alerts.erase_subscriber")

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        return search_by_address(queryset, search_term, field="email_hmac"), False

    @admin.action(description="Revoke the links already emailed to the selected subscribers",
                  permissions=["change"])
    def revoke_links(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = subscriber_revoke_links(subscriber_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Revoked the emailed links of {count} subscriber(s); "
                                   "their unsubscribe links still unsubscribe.")

    actions = ["revoke_links"]


def search_by_address(queryset: QuerySet, search_term: str, *, field: str) -> QuerySet:
    """Admin search by a whole address, through its keyed hash: one index lookup,
    where Django's default `icontains` would read every row of a big table."""
    term = search_term.strip()
    return queryset.filter(**{field: email_hmac(term)}) if term else queryset


@admin.register(ConsentEvent)
class ConsentEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "subscriber", "purpose", "action", "source"]
    list_filter = ["purpose", "action", "source", "created_at"]
    search_fields = ["subscriber__email"]
    search_help_text = "Enter a subscriber's whole email address."
    list_select_related = ["subscriber"]
    show_full_result_count = False

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        return search_by_address(queryset, search_term, field="subscriber__email_hmac"), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Wording)
class WordingAdmin(admin.ModelAdmin):
    list_display = ["kind", "version", "created_at", "digest"]
    list_filter = ["kind"]
    readonly_fields = ["kind", "version", "text", "digest", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


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
        if change and reason and suppression_lift(
            suppression_id=obj.pk, user=request.user, reason=reason
        ):
            record_audit(action=AuditEvent.Action.SUPPRESSION_LIFTED, request=request, target=obj,
                         changes={"lifted": [False, True]}, note=reason)
            self.message_user(request, "Suppression lifted; sending to this address may resume.")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
