"""Every view that goes without Django's CSRF protection, found by walking the
URLconf: exactly the ones the README explains, each with its own defence."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, get_resolver

# name -> why it may go without the CSRF cookie (README, "Security").
EXPECTED = {
    # RFC 8058: mailbox providers POST with no cookies; it only ever unsubscribes.
    "alerts:unsubscribe",
    # A third-party page frames it, where our cookie is not sent; Origin must be ours.
    "alerts:embed",
    # application/json only: a browser sends that cross-origin only after a CORS
    # preflight that only CORS_ALLOWED_ORIGINS pass.
    "alerts:api_subscribe",
}


def exempt_views(resolver: URLResolver, prefix: str = "") -> set[str]:
    found = set()
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            namespace = f"{prefix}{pattern.namespace}:" if pattern.namespace else prefix
            found |= exempt_views(pattern, namespace)
        elif isinstance(pattern, URLPattern) and getattr(pattern.callback, "csrf_exempt", False):
            found.add(f"{prefix}{pattern.name}")
    return found


def test_the_csrf_exempt_views_are_exactly_one_click_the_webhooks_and_the_embed_endpoints():
    exempt = exempt_views(get_resolver())
    webhooks = {name for name in exempt if name.startswith("anymail:")}
    # Provider webhooks: authenticated by Basic auth and the provider's signature.
    assert webhooks and all(name.endswith("_tracking_webhook") for name in webhooks), webhooks
    assert "anymail:mailgun_tracking_webhook" in webhooks
    assert exempt - webhooks == EXPECTED
