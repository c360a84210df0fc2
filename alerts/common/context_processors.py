from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from . import wording


def publication(request: HttpRequest) -> dict[str, str]:
    return {
        "publication_name": settings.PUBLICATION_NAME,
        "publication_url": settings.PUBLICATION_URL,
        "signup_heading": wording.SIGNUP_HEADING,
        "marketing_label": wording.marketing_label(),
    }
