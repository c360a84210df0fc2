"""Generated input against the signup form and the JSON endpoint: whatever arrives, the
reader gets an answer (never a 500), and any email we send goes to exactly the one
address we stored, with no header a visitor could have injected."""

from __future__ import annotations

import json

import pytest
from django.core import mail
from django.core.cache import cache
from django.core.exceptions import ValidationError
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from alerts.common.addresses import normalize_email
from alerts.models import Subscriber

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous", "quiet_bad_requests")]

ANSWERS = {200, 400, 415, 429}


def fuzz(examples: int) -> hsettings:
    """Hypothesis settings: no per-example deadline (the first request warms caches),
    no example database written into the repository."""
    return hsettings(max_examples=examples, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

INJECTIONS = [
    "a@example.com\r\nBcc: x@example.com", "a@example.com\nBcc: x@example.com",
    "a@example.com\rTo: x@example.com", "a@example.com%0d%0aBcc:x@example.com",
    "To: x@example.com", "a@example.com, x@example.com", "a@example.com; x@example.com",
    "Alice <a@example.com>", '"x@example.com" <a@example.com>', "a@example.com\x00x@example.com",
    "a@example.com\u2028Bcc: x@example.com", "=?utf-8?q?a=0D=0ABcc:x@example.com?=",
    "a@example.com\tBcc: x@example.com", "a@[127.0.0.1]", '"a\r\nb"@example.com',
    "a@example.com\r\n", " a@example.com ",
]
SEPARATORS = ["\r\n", "\n", "\r", "\x00", ",", ";", " ", "\t", "\u0085", "\u2028", ""]
HEADERS = ["Bcc: x@example.com", "To: x@example.com", "Cc: x@example.com", "Subject: hi", ""]

addresses = st.one_of(
    st.emails(),
    st.sampled_from(INJECTIONS),
    st.builds(lambda a, sep, h: a + sep + h, st.emails(), st.sampled_from(SEPARATORS),
              st.sampled_from(HEADERS)),
    st.text(),
    st.text(alphabet=st.characters(codec="ascii"), min_size=1, max_size=40).map(lambda s: s + "@example.com"),
    st.integers(min_value=50, max_value=400).map(lambda n: "a" * n + "@example.com"),
    st.integers(min_value=200, max_value=5000).map(lambda n: "a@" + "b" * n + ".com"),
)
# Form fields arrive as one value or several (a repeated name in the body).
form_values = st.one_of(st.text(max_size=400), addresses, st.lists(st.text(max_size=50), max_size=3))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def start_example() -> None:
    """Hypothesis runs many examples inside one test (one database transaction), so
    each one starts from nothing: no counters, no mail, no subscribers."""
    cache.clear()
    mail.outbox.clear()
    if Subscriber.objects.exists():
        Subscriber.objects.all().delete()


def expected_address(value) -> str | None:
    """What a well-behaved form would store for this submitted value, or None."""
    if isinstance(value, list):
        value = value[-1] if value else ""
    if not isinstance(value, str):
        return None
    try:
        return normalize_email(value.strip())
    except ValidationError:
        return None


def is_blank(value) -> bool:
    if isinstance(value, list):
        value = value[-1] if value else ""
    return not isinstance(value, str) or not value.strip()


def assert_mail_is_safe() -> None:
    """Every email sent went to exactly one recipient, the stored subscriber, and no
    header carries a line break."""
    stored = list(Subscriber.objects.values_list("email", flat=True))
    assert len(mail.outbox) <= len(stored) <= 1
    for message in mail.outbox:
        assert message.recipients() == stored
        mime = message.message()
        assert mime["To"] == stored[0]
        for name, value in mime.items():
            assert "\r" not in str(value) and "\n" not in str(value), (name, value)
        assert "Bcc" not in mime and "Cc" not in mime


def post_form(client, capture, data: dict):
    with capture(execute=True):
        return client.post("/", data, REMOTE_ADDR="203.0.113.9")


def post_json(client, capture, body: bytes, content_type: str = "application/json"):
    with capture(execute=True):
        return client.generic("POST", "/api/subscribe", body, content_type=content_type,
                              REMOTE_ADDR="203.0.113.9")


@fuzz(700)
@given(email=addresses, marketing=form_values, website=form_values, tz=form_values)
@example(email="alice@example.com", marketing="on", website="", tz="x" * 500)
@example(email="alice@example.com", marketing="", website="", tz="../../etc/passwd")
@example(email="alice@example.com", marketing="", website="", tz="Europe/London\x00")
def test_the_form_answers_every_input_and_mails_only_the_stored_address(
    client, django_capture_on_commit_callbacks, email, marketing, website, tz,
):
    start_example()
    response = post_form(client, django_capture_on_commit_callbacks,
                         {"email": email, "marketing": marketing, "website": website, "tz": tz})
    assert response.status_code in ANSWERS
    address = expected_address(email)
    if address is None:
        assert response.status_code == 400
        assert "Please enter a valid email address" in response.content.decode()
        assert not Subscriber.objects.exists() and mail.outbox == []
        return
    # A valid address always gets the thanks, whatever else came with it.
    assert response.status_code == 200
    assert "Thanks for signing up to the breaking news emails" in response.content.decode()
    if is_blank(website):
        assert list(Subscriber.objects.values_list("email", flat=True)) == [address]
        assert len(mail.outbox) == 1
    else:  # the honeypot: looks the same, does nothing
        assert not Subscriber.objects.exists() and mail.outbox == []
    assert_mail_is_safe()


@fuzz(550)
@given(
    email=st.one_of(addresses, json_values),
    others=st.dictionaries(st.sampled_from(["marketing", "website", "tz", "extra"]), json_values),
)
@example(email="alice@example.com", others={"tz": "y" * 100, "website": "z" * 300})
@example(email=["alice@example.com"], others={})
@example(email={"email": "alice@example.com"}, others={})
def test_the_json_endpoint_answers_every_payload_and_mails_only_the_stored_address(
    client, django_capture_on_commit_callbacks, email, others,
):
    start_example()
    payload = {**others, "email": email}
    response = post_json(client, django_capture_on_commit_callbacks, json.dumps(payload).encode())
    assert response.status_code in ANSWERS
    body = response.json()
    address = expected_address(email) if isinstance(email, str) else None
    if address is None:
        assert response.status_code == 400
        assert body["ok"] is False
        assert body["errors"]["email"] == ["Please enter a valid email address"]
        assert not Subscriber.objects.exists() and mail.outbox == []
        return
    assert response.status_code == 200
    assert body["ok"] is True
    website = others.get("website")
    if not isinstance(website, str) or not website.strip():
        assert list(Subscriber.objects.values_list("email", flat=True)) == [address]
        assert len(mail.outbox) == 1
    assert_mail_is_safe()


@fuzz(800)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(str.encode),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.sampled_from([b"", b"{", b'{"email": "a@example.com"', b"[" * 100_000, b"{\"a\":" * 50_000,
                         b"NaN", b"1" * 10_000, b'"\xff"', b"\xef\xbb\xbf{}", b"null",
                         b'{"email": "a@example.com"}\x00', '{"email": "ä@example.com"}'.encode("utf-16")]),
    ),
    content_type=st.sampled_from([
        "application/json", "application/json; charset=utf-8", "application/json; charset=latin-1",
        "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "",
        "application/jsonx", "text/json", "application/*",
    ]),
)
@example(body=b"[" * 100_000, content_type="application/json")  # was a RecursionError 500
@example(body='{"email": "Ā@example.com"}'.encode("utf-16"), content_type="application/json")
def test_malformed_bodies_and_wrong_content_types_are_refused_politely(
    client, django_capture_on_commit_callbacks, body, content_type,
):
    start_example()
    response = post_json(client, django_capture_on_commit_callbacks, body, content_type)
    assert response.status_code in ANSWERS
    if response.status_code != 200:
        assert response.json()["ok"] is False
        assert not Subscriber.objects.exists() and mail.outbox == []
    assert_mail_is_safe()


@fuzz(300)
@given(
    body=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)),
    content_type=st.sampled_from([
        "application/x-www-form-urlencoded", "multipart/form-data", "multipart/form-data; boundary=x",
        "application/json", "text/plain", "",
    ]),
)
def test_the_form_answers_any_raw_body(client, django_capture_on_commit_callbacks, body, content_type):
    start_example()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.generic("POST", "/", body, content_type=content_type, REMOTE_ADDR="203.0.113.9")
    assert response.status_code in ANSWERS
    assert_mail_is_safe()


@fuzz(150)
@given(email=st.emails())
def test_signing_up_again_sends_no_more_mail_inside_the_cooldown(client, django_capture_on_commit_callbacks, email):
    start_example()
    first = post_form(client, django_capture_on_commit_callbacks, {"email": email})
    again = post_form(client, django_capture_on_commit_callbacks, {"email": email.upper()})
    assert first.status_code == again.status_code
    if first.status_code == 200:
        assert Subscriber.objects.count() == 1
        assert len(mail.outbox) == 1
    assert_mail_is_safe()
