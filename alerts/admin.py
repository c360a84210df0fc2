"""The newsroom's admin: subscribers with their consent history (read-only), topics."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import ConsentEvent, Subscriber, Topic, Wording


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
    date_hierarchy = "created_at"
    readonly_fields = ["email", "email_hmac", "status", "marketing_consent", "source",
                       "created_at", "confirmed_at", "unsubscribed_at", "last_digest_at"]
    fields = readonly_fields[:2] + ["frequency", "topics", "time_zone"] + readonly_fields[2:]
    filter_horizontal = ["topics"]
    inlines = [ConsentEventInline]
    show_full_result_count = False  # COUNT(*) on a million rows per page view is wasteful

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Subscribers arrive through a consent flow (form, import), never by hand.
        return False


@admin.register(ConsentEvent)
class ConsentEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "subscriber", "purpose", "action", "source"]
    list_filter = ["purpose", "action", "source", "created_at"]
    search_fields = ["subscriber__email"]
    list_select_related = ["subscriber"]
    show_full_result_count = False

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


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "position"]
    prepopulated_fields = {"slug": ["name"]}
