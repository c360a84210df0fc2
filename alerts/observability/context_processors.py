"""The deliverability warning on every admin page (templates/admin/base_site.html)."""

from __future__ import annotations

from django.http import HttpRequest

from .deliverability import rolling_rates


def deliverability(request: HttpRequest) -> dict:
    """{"deliverability_warning": Rates} on admin pages for staff while complaints are
    above DELIVERABILITY_COMPLAINT_WARN; nothing elsewhere (readers' pages never pay
    for it)."""
    user = getattr(request, "user", None)
    if not request.path.startswith("/admin/") or not getattr(user, "is_staff", False):
        return {}
    rates = rolling_rates()
    return {"deliverability_warning": rates} if rates.warn else {}
