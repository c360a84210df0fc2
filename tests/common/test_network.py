"""Where a request came from behind the newsroom's proxies (TRUSTED_PROXIES): one
answer for the rate limits and the consent record, and never a 500 for a bad header."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.test import RequestFactory

import alerts.tasks  # noqa: F401  (registers the tasks the signup queues)
from alerts.common.network import client_address, ratelimit_key
from alerts.models import ConsentEvent
from tests.helpers import API, ROOT, SIGNUP

PROXY = "10.0.0.2"


def address(remote: str = PROXY, forwarded: str | None = None) -> str | None:
    meta = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    return client_address(RequestFactory().get("/", **meta))


def test_without_trusted_proxies_the_forwarded_header_is_ignored(settings):
    settings.TRUSTED_PROXIES = 0
    assert address("203.0.113.9", forwarded="198.51.100.1") == "203.0.113.9"


def test_behind_one_proxy_the_client_is_the_entry_that_proxy_appended(settings):
    settings.TRUSTED_PROXIES = 1
    # The client wrote "10.0.0.1" itself; our proxy appended what it saw.
    assert address(forwarded="10.0.0.1, 203.0.113.9") == "203.0.113.9"
    assert address(forwarded="203.0.113.9") == "203.0.113.9"


def test_behind_two_proxies_the_client_is_the_second_entry_from_the_right(settings):
    settings.TRUSTED_PROXIES = 2
    assert address(forwarded="6.6.6.6, 203.0.113.9, 10.0.0.7") == "203.0.113.9"
    # Fewer entries than proxies: the request did not come through them all.
    assert address(forwarded="203.0.113.9") == PROXY


def test_with_proxy_networks_the_client_is_the_first_address_outside_them(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "fd00::/8"]
    assert address(forwarded="6.6.6.6, 203.0.113.9, 10.1.2.3") == "203.0.113.9"
    assert address(forwarded="[2001:db8::5]:443, fd00::1") == "2001:db8::5"
    # Straight from the internet, not through our proxy: its header means nothing.
    assert address("198.51.100.4", forwarded="203.0.113.9") == "198.51.100.4"


@pytest.mark.parametrize("header", [
    "", ",,,", "not-an-ip", "10.0.0.1, ", "203.0.113.9:80:90", "[::1", "🙂", "1.2.3.4.5",
    "999.1.1.1", " , 203.0.113.9 ,", "x" * 10_000, ", ".join(["203.0.113.9"] * 5000),
])
def test_a_malformed_header_never_raises(settings, header):
    for trusted in (1, 2, ["10.0.0.0/8"]):
        settings.TRUSTED_PROXIES = trusted
        result = address(forwarded=header)
        assert result is None or isinstance(result, str)


def test_ports_and_mapped_addresses_are_read_as_the_address_itself(settings):
    settings.TRUSTED_PROXIES = 1
    assert address(forwarded="203.0.113.9:5123") == "203.0.113.9"
    assert address(forwarded="::ffff:203.0.113.9") == "203.0.113.9"


def test_an_ipv6_reader_is_counted_by_their_network(settings):
    settings.TRUSTED_PROXIES = 0
    one = RequestFactory().get("/", REMOTE_ADDR="2001:db8:1:2::1")
    two = RequestFactory().get("/", REMOTE_ADDR="2001:db8:1:2:ffff::9")
    assert ratelimit_key("g", one) == ratelimit_key("g", two) == "2001:db8:1:2::"


# --- Through the signup views ---------------------------------------------------------


pytestmark_db = pytest.mark.django_db


def post_form(client, email: str, forwarded: str, path: str = SIGNUP):
    return client.post(path, {"email": email}, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=forwarded)


@pytestmark_db
def test_a_two_entry_header_is_a_signup_not_a_500_and_records_the_real_client(
        client, settings, django_capture_on_commit_callbacks):
    settings.TRUSTED_PROXIES = 1
    settings.CELERY_TASK_ALWAYS_EAGER = True
    with django_capture_on_commit_callbacks(execute=True):
        response = post_form(client, "alice@example.com", "10.0.0.1, 203.0.113.9")
    assert response.status_code == 200
    assert ConsentEvent.objects.get().ip_address == "203.0.113.9"


@pytestmark_db
@pytest.mark.parametrize("header", ["junk", "10.0.0.1, junk", "", "[::1"])
def test_a_junk_header_through_the_proxy_still_gets_the_normal_answer(client, settings, header):
    settings.TRUSTED_PROXIES = 1
    assert post_form(client, "alice@example.com", header).status_code == 200


@pytestmark_db
def test_behind_a_proxy_each_reader_has_a_budget_of_their_own(client, settings):
    settings.TRUSTED_PROXIES = 1
    settings.SIGNUP_RATE_PER_IP = "2/h"
    codes = [post_form(client, f"a{i}@example.com", "203.0.113.9").status_code for i in range(3)]
    assert codes == [200, 200, 429]
    # Another reader behind the same proxy is not held back by the first one.
    assert post_form(client, "b@example.com", "198.51.100.20").status_code == 200


@pytestmark_db
def test_the_page_the_embed_and_the_json_endpoint_share_one_budget(client, settings):
    settings.SIGNUP_RATE_PER_IP = "3/h"
    meta = {"REMOTE_ADDR": "203.0.113.9"}
    assert client.post(SIGNUP, {"email": "a@example.com"}, **meta).status_code == 200
    assert client.post("/embed/", {"email": "b@example.com"}, HTTP_ORIGIN="http://testserver",
                       **meta).status_code == 200
    assert client.post(API, json.dumps({"email": "c@example.com"}), content_type="application/json",
                       **meta).status_code == 200
    assert client.post(API, json.dumps({"email": "d@example.com"}), content_type="application/json",
                       **meta).status_code == 429
    assert client.post(SIGNUP, {"email": "e@example.com"}, **meta).status_code == 429


# --- The https header follows the same setting ----------------------------------------


def _setting(name: str, **env) -> str:
    code = f"import config.settings as s; print(repr(s.{name}))"
    environment = {**os.environ, "SECRET_KEY": "x" * 50, "EMAIL_HASH_KEY": "k", **env}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment,
                          capture_output=True, text=True, check=True).stdout.strip()


def test_the_forwarded_proto_header_is_trusted_only_with_a_proxy_in_front():
    assert _setting("SECURE_PROXY_SSL_HEADER", TRUSTED_PROXIES="0") == "None"
    assert _setting("SECURE_PROXY_SSL_HEADER", TRUSTED_PROXIES="1") == \
        "('HTTP_X_FORWARDED_PROTO', 'https')"
    assert _setting("TRUSTED_PROXIES", TRUSTED_PROXIES="10.0.0.0/8, fd00::/8") == \
        "['10.0.0.0/8', 'fd00::/8']"


def test_a_bad_proxy_setting_or_the_old_meta_key_refuses_to_start():
    for env in ({"TRUSTED_PROXIES": "ten"}, {"RATELIMIT_IP_META_KEY": "HTTP_X_FORWARDED_FOR"}):
        with pytest.raises(subprocess.CalledProcessError) as failure:
            _setting("TRUSTED_PROXIES", **env)
        assert "ImproperlyConfigured" in failure.value.stderr
