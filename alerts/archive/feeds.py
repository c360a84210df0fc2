"""RSS 2.0 and Atom feeds of the archive (Django's syndication framework): the latest
public alerts, corrections and updates marked as such in their titles."""

from __future__ import annotations

from django.conf import settings
from django.contrib.syndication.views import Feed
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.cache import patch_cache_control
from django.utils.feedgenerator import Atom1Feed

from ..models import Alert
from .pages import FEED_LENGTH, headline_with_kind, public_alerts, require_archive
from .views import CACHE_SECONDS


class AlertsFeed(Feed):
    def __call__(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        require_archive()
        response = super().__call__(request, *args, **kwargs)
        patch_cache_control(response, public=True, max_age=CACHE_SECONDS)
        return response

    def title(self) -> str:
        return f"{settings.PUBLICATION_NAME}: breaking news"

    def link(self) -> str:
        return f"{settings.SITE_URL}{reverse('alerts:archive')}"

    def description(self) -> str:
        return f"Every breaking news alert {settings.PUBLICATION_NAME} has sent, newest first."

    def items(self) -> list[Alert]:
        return list(public_alerts().prefetch_related("topics")[:FEED_LENGTH])

    def item_title(self, item: Alert) -> str:
        return headline_with_kind(item)

    def item_description(self, item: Alert) -> str:
        return item.standfirst

    def item_link(self, item: Alert) -> str:
        # SITE_URL, not the request's host: behind a proxy the request may say http.
        return f"{settings.SITE_URL}{reverse('alerts:archive_alert', args=[item.pk])}"

    def item_pubdate(self, item: Alert):
        return item.published_at

    def item_updateddate(self, item: Alert):
        return item.published_at

    def item_categories(self, item: Alert) -> list[str]:
        return [topic.name for topic in item.topics.all()]


class AtomAlertsFeed(AlertsFeed):
    feed_type = Atom1Feed

    def subtitle(self) -> str:
        return self.description()
