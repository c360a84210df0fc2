"""Where a signup came from: the article page that embedded the box (or, failing that,
the Referer the browser sent) and the campaign tags (utm_source, utm_medium,
utm_campaign) of that page's URL. Kept on the ConsentRequest and copied to the
Subscriber, for "top articles by signups" and the per-source charts.

Everything here is the reader's browser's word: it is trimmed, length-limited and
dropped when it is not an http(s) URL, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

from django.http import HttpRequest

URL_MAX = 500
TAG_MAX = 100
UTM = ("utm_source", "utm_medium", "utm_campaign")


@dataclass(frozen=True)
class SignupOrigin:
    page: str = ""
    referrer: str = ""
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""

    def fields(self) -> dict[str, str]:
        """As the ConsentRequest and Subscriber fields of the same names."""
        return {"signup_page": self.page, "signup_referrer": self.referrer, "utm_source": self.utm_source,
                "utm_medium": self.utm_medium, "utm_campaign": self.utm_campaign}


def signup_origin(request: HttpRequest, data) -> SignupOrigin:
    """From the form or JSON body (`page`, and utm_* if the page passed them on) and
    the Referer. The embedded box's page is the article (embed.js passes it); on our
    own signup page the Referer is where the reader came from."""
    referrer = clean_url(request.META.get("HTTP_REFERER", ""))
    page = clean_url(_text(data.get("page"))) or referrer
    tags = _tags_of(page)
    return SignupOrigin(page=page, referrer=referrer, **{
        name: _tag(_text(data.get(name))) or tags.get(name, "") for name in UTM})


def clean_url(value: str) -> str:
    """An http(s) URL of at most URL_MAX characters with its fragment dropped, or ""."""
    value = value.strip()
    if not value or len(value) > 2000:
        return ""
    try:
        parts = urlsplit(value)
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c in value for c in "\r\n\x00 "):
        return ""
    url = urlunsplit(parts._replace(fragment=""))
    return url if len(url) <= URL_MAX else ""


def _tags_of(url: str) -> dict[str, str]:
    if not url:
        return {}
    query = parse_qs(urlsplit(url).query)
    return {name: _tag(query[name][0]) for name in UTM if query.get(name)}


def _tag(value: str) -> str:
    value = "".join(ch for ch in value.strip() if ch.isprintable())
    return value[:TAG_MAX]


def _text(value) -> str:
    return value if isinstance(value, str) else ""
