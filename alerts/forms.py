from __future__ import annotations

import zoneinfo

from django import forms
from django.core.exceptions import ValidationError

from . import wording
from .addresses import INVALID_MESSAGE, normalize_email


class SignupForm(forms.Form):
    email = forms.CharField(
        label="Email address",
        max_length=320,
        error_messages={"required": INVALID_MESSAGE, "max_length": INVALID_MESSAGE},
        widget=forms.EmailInput(attrs={
            "autocomplete": "email", "inputmode": "email", "required": True,
            "placeholder": "Enter your email address", "spellcheck": "false",
        }),
    )
    marketing = forms.BooleanField(required=False)
    # Honeypot: hidden from people by CSS and from assistive technology; bots fill it.
    website = forms.CharField(required=False, max_length=200)
    # The browser's IANA zone, from Intl.DateTimeFormat; used for digest times.
    tz = forms.CharField(required=False, max_length=64)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["marketing"].label = wording.marketing_label()

    def clean_email(self) -> str:
        return normalize_email(self.cleaned_data["email"])

    def clean_tz(self) -> str:
        name = self.cleaned_data.get("tz") or ""
        try:
            return name if name and zoneinfo.ZoneInfo(name) else ""
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return ""

    @property
    def is_bot(self) -> bool:
        return bool(self.cleaned_data.get("website"))

    def first_error(self) -> str:
        for errors in self.errors.values():
            return str(errors[0])
        return INVALID_MESSAGE


def validate_email_field(raw: str) -> str:
    """Normalise one address for callers without a form (JSON API, CSV import)."""
    if not isinstance(raw, str):
        raise ValidationError(INVALID_MESSAGE)
    return normalize_email(raw)
