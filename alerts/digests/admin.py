"""Digest runs in the admin: when, for which period and time zone, how many, how
long, failures, and when a run went over to the fallback provider."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Sum
from django.http import HttpRequest

from ..models import DigestRun


@admin.register(DigestRun)
class DigestRunAdmin(admin.ModelAdmin):
    """Each digest run: when, for whom, how many, how long, failures, failover."""

    list_display = ["created_at", "period_key", "time_zone", "status", "planned", "sent", "skipped",
                    "failed", "duration", "failed_over"]
    list_filter = ["status", "frequency", "time_zone"]
    readonly_fields = ["frequency", "period_key", "time_zone", "status", "created_at",
                       "fanned_out_at", "finished_at", "planned", "failover_at"]

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).annotate(
            sent_total=Sum("batches__sent_count"), skipped_total=Sum("batches__skipped_count"),
            failed_total=Sum("batches__failed_count"))

    @admin.display(description="Sent", ordering="sent_total")
    def sent(self, run: DigestRun) -> int:
        return run.sent_total or 0

    @admin.display(description="Nothing new")
    def skipped(self, run: DigestRun) -> int:
        return run.skipped_total or 0

    @admin.display(description="Failed")
    def failed(self, run: DigestRun) -> int:
        return run.failed_total or 0

    @admin.display(description="Took")
    def duration(self, run: DigestRun) -> str:
        if not run.finished_at:
            return "still sending"
        return f"{(run.finished_at - run.created_at).total_seconds():.1f} s"

    @admin.display(description="Failed over", ordering="failover_at")
    def failed_over(self, run: DigestRun) -> str:
        return f"at {run.failover_at:%H:%M:%S} UTC" if run.failover_at else "—"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
