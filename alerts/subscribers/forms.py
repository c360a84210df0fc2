"""Forms for the preference centre and the "email me my link" page."""

from __future__ import annotations

import zoneinfo
from functools import cache

from django import forms
from django.conf import settings

from ..common import wording
from ..common.addresses import INVALID_MESSAGE, normalize_email
from ..models import Subscriber, Topic
from .services import PreferenceChoices


@cache
def time_zone_choices() -> list[tuple[str, str]]:
    zones = sorted(z for z in zoneinfo.available_timezones() if "/" in z and not z.startswith("Etc/"))
    default = ("", f"Newsroom time ({settings.PUBLICATION_TIME_ZONE})")
    return [default, *[(zone, zone.replace("_", " ")) for zone in zones]]


class PreferencesForm(forms.Form):
    alerts = forms.BooleanField(required=False)
    topics = forms.ModelMultipleChoiceField(
        queryset=Topic.objects.all(), required=False, widget=forms.CheckboxSelectMultiple,
        help_text="Tick none to get every topic.",
    )
    frequency = forms.ChoiceField(
        choices=Subscriber.Frequency.choices, widget=forms.RadioSelect, label="How often")
    marketing = forms.BooleanField(required=False)
    time_zone = forms.ChoiceField(
        choices=time_zone_choices, required=False, label="Your time zone",
        help_text="Digests arrive in the morning of this time zone.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["alerts"].label = wording.preferences_alerts_label()
        self.fields["marketing"].label = wording.marketing_label()

    @staticmethod
    def initial_for(subscriber: Subscriber) -> dict:
        return {
            "alerts": subscriber.status != Subscriber.Status.UNSUBSCRIBED,
            "topics": list(subscriber.topics.values_list("id", flat=True)),
            "frequency": subscriber.frequency,
            "marketing": subscriber.marketing_consent,
            "time_zone": subscriber.time_zone,
        }

    def choices(self) -> PreferenceChoices:
        data = self.cleaned_data
        return PreferenceChoices(
            alerts=data["alerts"], marketing=data["marketing"], frequency=data["frequency"],
            topic_ids=[topic.pk for topic in data["topics"]], time_zone=data["time_zone"] or "",
        )


class PreferencesRequestForm(forms.Form):
    email = forms.CharField(
        label="Email address", max_length=320,
        error_messages={"required": INVALID_MESSAGE, "max_length": INVALID_MESSAGE},
        widget=forms.EmailInput(attrs={"autocomplete": "email", "required": True,
                                       "class": "signup__input"}),
    )
    # Honeypot, as on the signup form.
    website = forms.CharField(required=False, max_length=200)

    def clean_email(self) -> str:
        return normalize_email(self.cleaned_data["email"])

    @property
    def is_bot(self) -> bool:
        return bool(self.cleaned_data.get("website"))
