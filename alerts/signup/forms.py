from __future__ import annotations

import zoneinfo

from django import forms
from django.core.exceptions import ValidationError

from ..common import wording
from ..common.addresses import INVALID_MESSAGE, normalize_email


class SignupForm(forms.Form):
    email = forms.CharField(
        label="Email address",
        max_length=320,
        error_messages={"required": INVALID_MESSAGE, "max_length": INVALID_MESSAGE,
                        "null_characters_not_allowed": INVALID_MESSAGE},
        widget=forms.EmailInput(attrs={
            "autocomplete": "email", "inputmode": "email", "required": True,
            "placeholder": "Enter your email address", "spellcheck": "false",
        }),
    )
    marketing = forms.BooleanField(required=False)
    # Honeypot: hidden from people by CSS and from assistive technology; bots fill it.
    # A plain Field, without CharField's length and NUL checks: a filled-in honeypot
    # must get the same thanks as a reader, never a 400 telling the bot what we check.
    website = forms.Field(required=False)
    # The browser's IANA zone, from Intl.DateTimeFormat; used for digest times. Only a
    # hint, so a bad value is dropped in clean_tz rather than refusing the signup.
    tz = forms.Field(required=False)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["marketing"].label = wording.marketing_label()

    def clean_email(self) -> str:
        return normalize_email(self.cleaned_data["email"])

    def clean_website(self) -> str:
        value = self.cleaned_data.get("website")
        return value.strip() if isinstance(value, str) else ""

    def clean_tz(self) -> str:
        name = self.cleaned_data.get("tz")
        if not isinstance(name, str) or not name or len(name) > 64 or "\x00" in name:
            return ""
        try:
            return name if zoneinfo.ZoneInfo(name) else ""
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
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
