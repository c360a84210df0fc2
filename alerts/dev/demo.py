"""Standard topics and the demo alert that a fresh `make run` has ready to publish."""

from __future__ import annotations

from django.utils.text import slugify

from ..models import Alert, Topic

TOPICS = ["World", "UK", "Politics", "Business", "Science", "Sport"]

DEMO_HEADLINE = "North Korea fires two ballistic missiles hours before Kim meets Putin"
DEMO_STANDFIRST = (
    "Pyongyang launched the missiles ten minutes apart towards its eastern seas as "
    "Kim Jong-un arrived at Russia's Vostochny Cosmodrome for talks with Vladimir Putin."
)
DEMO_BODY = (
    "South Korea's military said the two ballistic missiles were fired from near "
    "Pyongyang's international airport, ten minutes apart, and came down in the sea "
    "east of the peninsula. Japan said both fell outside its exclusive economic zone, "
    "and its coast guard told ships to look out for debris.\n\n"
    "The launch came as the North Korean leader, who travelled by armoured train, "
    "was welcomed by the Russian president at the country's newest space launch site "
    "for their first meeting in almost four years, a summit watched closely amid "
    "fears of an arms deal between the two countries."
)


def ensure_topics() -> None:
    for position, name in enumerate(TOPICS):
        Topic.objects.get_or_create(slug=slugify(name), defaults={"name": name, "position": position})


def ensure_demo_alert(*, author=None) -> Alert | None:
    if Alert.objects.filter(headline=DEMO_HEADLINE).exists():
        return None
    alert = Alert.objects.create(
        headline=DEMO_HEADLINE, standfirst=DEMO_STANDFIRST, body=DEMO_BODY,
        url="https://news.example.com/world/north-korea-missiles-kim-putin", author=author,
    )
    alert.topics.set(Topic.objects.filter(slug="world"))
    return alert
