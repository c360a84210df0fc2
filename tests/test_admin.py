"""The admin's searches of big tables are index lookups, never scans."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import make_batch_deliveries, make_delivery, make_subscriber

pytestmark = pytest.mark.django_db

LEDGER = "/admin/alerts/delivery/"


def ledger_queries(admin_client, term: str) -> tuple[str, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(LEDGER, {"q": term}).content.decode()
    return page, [q["sql"] for q in queries if '"alerts_delivery"' in q["sql"]]


def test_the_ledger_is_searched_by_address_and_message_id_through_indexes(admin_client):
    alice, bob = make_subscriber(), make_subscriber("bob@example.com")
    mine = make_delivery(alice, message_id="<own@mg.example.com>")
    [his] = make_batch_deliveries([bob], message_id="<batch@mg.example.com>")
    row = "/admin/alerts/delivery/{}/change/".format
    for term, expected, absent in [(" Alice@Example.com", mine, his), ("own@mg.example.com", mine, his),
                                   ("<batch@mg.example.com>", his, mine)]:
        page, sql = ledger_queries(admin_client, term)
        assert row(expected.pk) in page and row(absent.pk) not in page, term
        assert sql and not any("LIKE" in statement.upper() for statement in sql), sql


@pytest.mark.parametrize("changelist", ["/admin/alerts/subscriber/", "/admin/alerts/consentevent/"])
def test_readers_and_their_consent_are_searched_by_the_address_hash(admin_client, changelist):
    make_subscriber()
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get(changelist, {"q": "alice@example.com"}).status_code == 200
    assert not any("LIKE" in q["sql"].upper() for q in queries)
