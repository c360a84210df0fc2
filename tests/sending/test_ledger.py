"""The delivery ledger a batch send writes (every recipient once, with the provider's
message id), and every raw statement of the engine against its portable twin, on
PostgreSQL: each is run on the same data (the other's writes rolled back) and both
must leave the same rows behind, or return the same thing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from alerts.models import Alert, Batch, Delivery, DigestRun, Subscriber, Suppression
from alerts.publishing import fanout
from alerts.sending import ledger
from alerts.sending.ledger import Outcome, Totals
from tests.factories import make_subscriber
from tests.helpers import publish_and_cut, send_all

pytestmark = pytest.mark.django_db

S = Delivery.Status


def test_the_ledger_records_every_recipient_with_the_provider_message_id(alert, settings, mailgun):
    for i in range(7):
        make_subscriber(f"r{i}@example.com")
    send_all(publish_and_cut(alert, settings=settings))
    deliveries = Delivery.objects.filter(alert=alert)
    assert deliveries.count() == 7
    # One API call, one provider id: kept once, on the batch, and read through each row.
    assert {d.provider_message_id for d in deliveries.select_related("batch")} == {mailgun.calls[0].message_id}
    assert set(deliveries.values_list("message_id", flat=True)) == {""}
    alert.refresh_from_db()
    assert alert.status == Alert.Status.SENT
    assert alert.first_handoff_at and alert.last_handoff_at and alert.finished_at


def test_a_batch_overlapping_rows_already_in_the_ledger_still_records_everyone_once(alert, settings, mailgun):
    readers = [make_subscriber(f"r{i}@example.com") for i in range(4)]
    batch, = publish_and_cut(alert, settings=settings)
    # Say an earlier, overlapping cut of the audience already sent to the first reader:
    # that row stays as it was, and the batch still records the other three.
    earlier = Batch.objects.create(alert=alert, first_subscriber_id=-1, last_subscriber_id=readers[0].pk,
                                   status=Batch.Status.SENT, message_id="<earlier@mg>")
    Delivery.objects.create(alert=alert, batch=earlier, subscriber=readers[0], status="sent")
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.SENT
    rows = Delivery.objects.filter(alert=alert).select_related("batch")
    assert sorted(r.subscriber_id for r in rows) == [r.pk for r in readers]
    assert {r.subscriber_id: r.provider_message_id for r in rows}[readers[0].pk] == "<earlier@mg>"
    assert {r.provider_message_id for r in rows if r.batch_id == batch.pk} == {mailgun.calls[0].message_id}
    batch.refresh_from_db()
    assert (batch.status, batch.sent_count) == (Batch.Status.SENT, 4)


@pytest.fixture
def readers() -> list[Subscriber]:
    """Twelve confirmed readers; the 3rd and 8th suppressed, the 5th's lifted."""
    people = [make_subscriber(f"reader{n:02d}@example.com") for n in range(12)]
    for person in (people[2], people[7]):
        Suppression.objects.create(email_hmac=person.email_hmac, reason=Suppression.Reason.HARD_BOUNCE)
    Suppression.objects.create(email_hmac=people[4].email_hmac, reason=Suppression.Reason.COMPLAINT,
                               lifted_at=timezone.now())
    return people


@pytest.fixture
def sending_alert() -> Alert:
    return Alert.objects.create(headline="Two missiles fired", status=Alert.Status.SENDING,
                                published_at=timezone.now())


@pytest.fixture
def batch(sending_alert, readers) -> Batch:
    return Batch.objects.create(alert=sending_alert, first_subscriber_id=readers[0].pk,
                                last_subscriber_id=readers[-1].pk, planned_count=len(readers),
                                status=Batch.Status.SENDING, attempts=1)


def rolled_back(action):
    """Run `action` and return what it returned and the rows it left, then undo it."""
    with transaction.atomic():
        returned = action()
        rows = snapshot()
        transaction.set_rollback(True)
    return returned, rows


def snapshot() -> dict[str, list]:
    """The rows the engine writes; times only as set or not, since two runs differ."""
    def flagged(queryset, *fields, times=()):
        return sorted((*row[:len(fields)], *(value is None for value in row[len(fields):]))
                      for row in queryset.values_list(*fields, *times))

    return {
        "deliveries": flagged(Delivery.objects, "alert_id", "digest_run_id", "digest_key", "batch_id",
                              "subscriber_id", "status", "message_id", "error", times=("sent_at",)),
        "batches": flagged(Batch.objects, "pk", "status", "attempts", "sent_count", "failed_count",
                           "skipped_count", "message_id", "last_error", times=("lease_expires_at", "sent_at")),
        "alerts": flagged(Alert.objects, "pk", "status",
                          times=("first_handoff_at", "last_handoff_at", "finished_at")),
        "subscribers": sorted(Subscriber.objects.values_list("pk", "last_digest_at")),
    }


def same_both_ways(raw, twin):
    """The raw statement and its twin return the same and leave the same rows."""
    raw_result = rolled_back(raw)
    twin_result = rolled_back(twin)
    assert raw_result == twin_result
    return raw_result


def ids(people: list[Subscriber]) -> list[int]:
    return [person.pk for person in people]


def test_walk_step_picks_the_same_batch_starts_as_its_twin(readers):
    unsuppressed = Subscriber.objects.unsuppressed().order_by("pk")
    sql, params = unsuppressed.values(sid=F("pk")).query.sql_with_params()
    for start, size in ((1, 3), (2, 4), (5, 5), (11, 20)):
        step = ledger.walk_step(sql, params, start, size, join_suppressions=False)
        assert step == ledger.walk_step_portable(sql, params, start, size)
    everyone = Subscriber.objects.order_by("pk").values(sid=F("pk"), hmac=F("email_hmac"))
    joined = ledger.walk_step(*everyone.query.sql_with_params(), 1, 3, join_suppressions=True)
    portable = ledger.walk_step_portable(sql, params, 1, 3)
    # Joined, the step reads the suppressed rows too but counts only members.
    eligible = [p for n, p in enumerate(readers) if n not in (2, 7)]
    assert joined.starts == portable.starts == ids(eligible)[::3]
    assert joined.found == portable.found == len(eligible)
    assert joined.scanned == len(readers)
    assert joined.last_read == readers[-1].pk


def test_an_empty_walk_step_agrees_with_its_twin(readers):
    nobody = Subscriber.objects.filter(pk__gt=readers[-1].pk).values(sid=F("pk"))
    sql, params = nobody.query.sql_with_params()
    step = ledger.walk_step(sql, params, 1, 5, join_suppressions=False)
    assert step == ledger.walk_step_portable(sql, params, 1, 5)
    assert step.starts == [] and step.found == 0


@pytest.mark.parametrize("state", ["pending", "due", "waiting", "expired-lease", "live-lease",
                                   "redelivered", "sent"])
def test_claim_takes_the_same_batches_as_its_twin(batch, state):
    now = timezone.now()
    changes = {
        "pending": {"status": Batch.Status.PENDING, "attempts": 0},
        "due": {"status": Batch.Status.PENDING, "next_attempt_at": now - timedelta(seconds=1)},
        "waiting": {"status": Batch.Status.PENDING, "next_attempt_at": now + timedelta(seconds=60)},
        "expired-lease": {"lease_expires_at": now - timedelta(seconds=5), "claimed_by": "dead"},
        "live-lease": {"lease_expires_at": now + timedelta(seconds=60), "claimed_by": "alive"},
        "redelivered": {"lease_expires_at": now + timedelta(seconds=60), "claimed_by": "task-7"},
        "sent": {"status": Batch.Status.SENT},
    }[state]
    Batch.objects.filter(pk=batch.pk).update(**changes)

    def outcome(claim):
        def run():
            claimed = claim(batch.pk, lease=timedelta(seconds=30), task_id="task-7")
            if claimed is None:
                return None
            lease_left = (claimed.lease_expires_at - timezone.now()).total_seconds()
            return (claimed.pk, claimed.status, claimed.attempts, claimed.takeovers, claimed.claimed_by,
                    25 < lease_left <= 30, claimed.alert_status, claimed.alert_updated_at)
        return run

    returned, rows = same_both_ways(outcome(ledger.claim), outcome(ledger.claim_portable))
    claimable = state in ("pending", "due", "expired-lease", "redelivered")
    assert (returned is not None) == claimable
    if claimable:
        assert returned[1] == Batch.Status.SENDING and returned[4] == "task-7" and returned[5]
        assert returned[3] == (1 if state in ("expired-lease", "redelivered") else 0)  # takeovers
        assert returned[6] == Alert.Status.SENDING


@pytest.mark.parametrize("owner", ["alert", "digest run"])
@pytest.mark.parametrize("failed_over", [False, True])
def test_claim_reads_its_owners_failover_decision_as_its_twin_does(sending_alert, readers, owner, failed_over):
    when = timezone.now() if failed_over else None
    if owner == "alert":
        Alert.objects.filter(pk=sending_alert.pk).update(failover_at=when)
        fields = {"alert": sending_alert}
    else:
        # An alert failed over meanwhile says nothing about the run.
        Alert.objects.filter(pk=sending_alert.pk).update(failover_at=timezone.now())
        fields = {"digest_run": DigestRun.objects.create(frequency="daily", period_key="daily:2026-12-01",
                                                         time_zone="UTC", failover_at=when)}
    batch = Batch.objects.create(**fields, first_subscriber_id=readers[0].pk, last_subscriber_id=readers[-1].pk)

    def outcome(claim):
        return lambda: claim(batch.pk, lease=timedelta(seconds=30)).owner_failover_at

    returned, _ = same_both_ways(outcome(ledger.claim), outcome(ledger.claim_portable))
    assert (returned is not None) == failed_over


def test_the_recipients_of_a_range_are_the_unsuppressed_members_both_ways(readers):
    members = Subscriber.objects.filter(status=Subscriber.Status.CONFIRMED)
    sql, params = members.order_by().values_list("pk", "email", "email_hmac").query.sql_with_params()
    first, last = readers[1].pk, readers[9].pk
    raw = ledger.unsuppressed_in_range(sql, params, first, last)
    assert raw == ledger.unsuppressed_in_range_portable(members, first, last)
    assert [sid for sid, _ in raw] == ids([p for n, p in enumerate(readers) if 1 <= n <= 9 and n not in (2, 7)])


def test_recording_a_batch_writes_the_same_rows_as_its_twin_and_keeps_earlier_ones(batch, readers):
    Delivery.objects.create(alert_id=batch.alert_id, batch=batch, subscriber=readers[0], status=S.DELIVERED)
    rows = [Outcome(readers[0].pk, S.SENT, "<m@x>"), Outcome(readers[1].pk, S.SENT, "<m@x>"),
            Outcome(readers[3].pk, S.FAILED, "", "rejected")]
    now = timezone.now()
    _, after = same_both_ways(lambda: ledger.record(batch, rows, now),
                              lambda: ledger.record_portable(batch, rows, now))
    by_reader = {row[4]: row[5] for row in after["deliveries"]}
    assert by_reader == {readers[0].pk: S.DELIVERED, readers[1].pk: S.SENT, readers[3].pk: S.FAILED}


def test_recording_per_message_outcomes_as_parallel_arrays_matches_its_twin(batch, readers):
    # More than three distinct outcomes take the parallel-array form of the INSERT.
    rows = [Outcome(person.pk, S.SENT, f"<m{n}@x>") for n, person in enumerate(readers[:6])]
    now = timezone.now()
    _, after = same_both_ways(lambda: ledger.record(batch, rows, now),
                              lambda: ledger.record_portable(batch, rows, now))
    assert [row[6] for row in after["deliveries"]] == [f"<m{n}@x>" for n in range(6)]


@pytest.mark.parametrize("sent", [True, False])
def test_closing_a_first_attempt_writes_the_same_rows_as_its_twin(batch, readers, sent):
    status = S.SENT if sent else S.FAILED
    rows = [Outcome(person.pk, status, "", "" if sent else "refused") for person in readers[:4]]
    totals = Totals(Batch.Status.SENT if sent else Batch.Status.FAILED, 4 if sent else 0, 0 if sent else 4,
                    2, "<call@mg>", "" if sent else "refused")
    now = timezone.now()
    _, after = same_both_ways(lambda: ledger.close_first_attempt(batch, totals, rows, now),
                              lambda: ledger.close_first_attempt_portable(batch, totals, rows, now))
    (closed,) = after["batches"]
    assert closed[1:8] == (totals.status, 1, totals.sent, totals.failed, 2, "<call@mg>", totals.error)
    (alert,) = after["alerts"]
    assert alert[2:4] == ((False, False) if sent else (True, True))  # hand-off times set only if sent


def test_closing_a_first_attempt_over_existing_rows_fails_whole_both_ways(batch, readers):
    Delivery.objects.create(alert_id=batch.alert_id, batch=batch, subscriber=readers[0], status=S.SENT)
    rows = [Outcome(readers[0].pk, S.SENT), Outcome(readers[1].pk, S.SENT)]
    totals = Totals(Batch.Status.SENT, 2, 0, 0)
    for close in (ledger.close_first_attempt, ledger.close_first_attempt_portable):
        with pytest.raises(IntegrityError):
            close(batch, totals, rows, timezone.now())
        assert Delivery.objects.count() == 1
        assert Batch.objects.get(pk=batch.pk).status == Batch.Status.SENDING


@pytest.mark.parametrize("batch_states,finished", [
    ((Batch.Status.SENT, Batch.Status.PENDING), None),
    ((Batch.Status.SENT, Batch.Status.SENDING), None),
    ((Batch.Status.FAILED, Batch.Status.FAILED), Alert.Status.FAILED),
    ((Batch.Status.SENT, Batch.Status.FAILED), Alert.Status.SENT),
    ((), Alert.Status.SENT),
])
def test_finishing_an_alert_decides_the_same_as_its_twin(sending_alert, batch_states, finished):
    alert = sending_alert
    Alert.objects.filter(pk=alert.pk).update(fanned_out_at=timezone.now())
    for n, state in enumerate(batch_states):
        Batch.objects.create(alert=alert, first_subscriber_id=n * 10 + 1, last_subscriber_id=n * 10 + 9,
                             status=state)
    now = timezone.now()
    done, after = same_both_ways(lambda: ledger.finish_alert(alert.pk, now),
                                 lambda: ledger.finish_alert_portable(alert.pk, now))
    assert done == (finished is not None)
    assert after["alerts"][0][1] == (finished or Alert.Status.SENDING)


def test_finishing_an_alert_not_yet_cut_waits_both_ways(sending_alert):
    alert = sending_alert
    now = timezone.now()
    done, _ = same_both_ways(lambda: ledger.finish_alert(alert.pk, now),
                             lambda: ledger.finish_alert_portable(alert.pk, now))
    assert done is False


def test_reserving_digest_rows_matches_its_twin_and_leaves_other_runs_rows(readers):
    run = DigestRun.objects.create(frequency="daily", period_key="daily:2026-12-01", time_zone="UTC")
    batch = Batch.objects.create(digest_run=run, first_subscriber_id=readers[0].pk,
                                 last_subscriber_id=readers[-1].pk)
    other = DigestRun.objects.create(frequency="daily", period_key="daily:2026-12-01", time_zone="Asia/Tokyo")
    other_batch = Batch.objects.create(digest_run=other, first_subscriber_id=readers[0].pk,
                                       last_subscriber_id=readers[0].pk)
    Delivery.objects.create(subscriber=readers[0], digest_key="daily:2026-12-01", digest_run=other,
                            batch=other_batch, status=S.PENDING)
    members = Subscriber.objects.unsuppressed()
    sql, params = members.values(sid=F("pk")).query.sql_with_params()
    key = {"digest_key": "daily:2026-12-01", "run_id": run.pk, "batch_id": batch.pk}
    _, after = same_both_ways(lambda: ledger.reserve_digest_rows(sql, params, **key),
                              lambda: ledger.reserve_digest_rows_portable(members, **key))
    mine = [row[4] for row in after["deliveries"] if row[1] == run.pk]
    assert mine == ids([p for n, p in enumerate(readers) if n not in (0, 2, 7)])


def test_updating_by_id_array_matches_its_twin(readers, batch):
    for person in readers[:5]:
        Delivery.objects.create(alert_id=batch.alert_id, batch=batch, subscriber=person, status=S.PENDING)
    chosen = ids(readers[1:4])
    when = timezone.now()
    same_both_ways(lambda: ledger.update_ids(Subscriber, chosen, last_digest_at=when),
                   lambda: ledger.update_ids_portable(Subscriber, chosen, last_digest_at=when))
    _, after = same_both_ways(
        lambda: ledger.update_ids(Delivery, chosen, key="subscriber_id", where={"status": S.PENDING},
                                  status=S.SENT, error=""),
        lambda: ledger.update_ids_portable(Delivery, chosen, key="subscriber_id", where={"status": S.PENDING},
                                           status=S.SENT, error=""))
    assert [row[4] for row in after["deliveries"] if row[5] == S.SENT] == chosen


def test_table_names_come_from_the_models():
    assert (ledger.ALERT, ledger.BATCH, ledger.DELIVERY, ledger.SUPPRESSION) == (
        Alert._meta.db_table, Batch._meta.db_table, Delivery._meta.db_table, Suppression._meta.db_table)


def test_text_arrays_reach_postgresql_as_they_were():
    from django.db import connection

    values = ["", "plain", "<id@smtp-relay.mailin.fr>", 'a "quote"', "back\\slash", "{braces}, commas", "NULL",
              "é ünïcode", " spaced "]
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::text[]", [ledger.text_array(values)])
        assert cursor.fetchone()[0] == values
