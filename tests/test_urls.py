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
    # The publishing API: authenticated by a bearer token the client must send itself,
    # never by a cookie, so a forged cross-site request carries no credential.
    api = {name for name in exempt if name.startswith("api-v1:")}
    assert api == {"api-v1:alert_create", "api-v1:alert_read", "api-v1:alert_publish",
                   "api-v1:alert_schedule", "api-v1:alert_stop", "api-v1:alert_correct",
                   "api-v1:alert_update", "api-v1:topic_list"}
    assert exempt - webhooks - api == EXPECTED


def test_every_api_operation_takes_a_bearer_token_and_no_cookie(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert schema["components"]["securitySchemes"] == {"TokenAuth": {"type": "http", "scheme": "bearer"}}
    operations = [op for methods in schema["paths"].values() for op in methods.values()]
    assert len(operations) == 8
    assert all(op["security"] == [{"TokenAuth": []}] for op in operations)
