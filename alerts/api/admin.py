"""API tokens in the admin: made per integration, shown once, revoked with an action.
Tokens are never deleted, so each keeps its last-used time and when it was revoked."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from ..models import ApiToken
from .tokens import token_create, token_revoke


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "scope", "shown_prefix", "created_at", "created_by", "last_used_at", "revoked_at"]
    list_filter = ["scope", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    fields = ["name", "scope"]
    readonly_fields = ["shown_prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    @admin.display(description="token")
    def shown_prefix(self, token: ApiToken) -> str:
        return f"sp_{token.prefix}_…"

    def get_fields(self, request: HttpRequest, obj=None):
        return self.fields + (self.readonly_fields if obj else [])

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ApiToken, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        row, plain = token_create(name=obj.name, scope=obj.scope, user=request.user)
        obj.pk, obj._state.adding, obj._plain_token = row.pk, False, plain

    def response_add(self, request: HttpRequest, obj: ApiToken, post_url_continue=None) -> HttpResponse:
        # Shown on this page and nowhere else: no redirect, no message stored in a cookie.
        response = TemplateResponse(request, "admin/alerts/apitoken/created.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta,
            "title": "API token created", "token": obj, "plain_token": obj._plain_token})
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke the selected tokens (at once, for good)")
    def revoke(self, request: HttpRequest, queryset) -> None:
        count = token_revoke(token_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{count} token(s) revoked.", messages.WARNING)
