"""What a chaos scenario measured, from the fake provider's request log, and the
issue's targets as checks: each says whether it was met and, if not, by how much.

The request log (tests/fakes/mailgun.py --log-requests) has one line per provider call,
answered or refused, with its times; a call's batch is known by its first recipient,
which stays the same across a batch's attempts (the recipients are selected by id
range, in id order).
"""

from __future__ import annotations

import collections
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.faults import Fault

# Rate-limited: "finishes in about readers / limit"; this much slower still counts.
RATE_LIMIT_SLACK, RATE_LIMIT_GRACE_S = 1.5, 5.0
# Provider down: the backoff the retries may follow, doubling from this first step;
# jitter may shorten any step to half.
BACKOFF_FIRST_STEP_S = 1.0


@dataclass(frozen=True)
class Call:
    arrived: float
    accepted: float | None
    answered: float
    status: int
    fault: str
    recipients: int
    batch: str  # the call's first recipient
    message_id: str


def read_calls(path: Path) -> list[Call]:
    calls = []
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 8:
            continue  # a line being written as the fake was stopped
        calls.append(Call(float(parts[0]), None if parts[1] == "-" else float(parts[1]), float(parts[2]),
                          int(parts[3]), parts[4], int(parts[5]), parts[6], parts[7]))
    return sorted(calls, key=lambda call: call.arrived)


class CallLog:
    """The provider calls of one run, and the figures the targets need from them."""

    def __init__(self, calls: list[Call]) -> None:
        self.calls = calls
        self.by_batch: dict[str, list[Call]] = collections.defaultdict(list)
        for call in calls:
            self.by_batch[call.batch].append(call)

    def arrived_at(self, moment: float) -> Call | None:
        """The call that arrived at this moment (as the fake's in_progress says)."""
        return next((c for c in self.calls if abs(c.arrived - moment) < 1e-5), None)

    def last_accepted(self) -> float | None:
        return max((c.accepted for c in self.calls if c.accepted is not None), default=None)

    def between(self, start: float, end: float) -> list[Call]:
        return [c for c in self.calls if start <= c.arrived <= end]

    def status_counts(self, calls: list[Call]) -> dict[str, int]:
        return dict(collections.Counter(f"{c.status}{' ' + c.fault if c.fault != '-' else ''}" for c in calls))

    def busiest_batch(self, start: float, end: float) -> tuple[int, list[float]]:
        """The most calls one batch received between start and end, and when (seconds
        after start)."""
        counts = collections.Counter(c.batch for c in self.between(start, end))
        if not counts:
            return 0, []
        batch, n = counts.most_common(1)[0]
        return n, [round(c.arrived - start, 2) for c in self.by_batch[batch] if start <= c.arrived <= end]

    def most_accepted_per_batch(self) -> int:
        return max((sum(c.status == 200 for c in calls) for calls in self.by_batch.values()), default=0)

    def overlapping(self) -> int:
        """Calls for a batch that arrived while an earlier call for it was still
        unanswered: the batch was taken over by another worker while the first was
        alive, waiting for the provider."""
        found = 0
        for calls in self.by_batch.values():
            for earlier, later in zip(calls, calls[1:], strict=False):
                found += later.arrived < earlier.answered
        return found

    def every_reader_at(self, record: Path) -> float | None:
        """When the last reader got a first copy: the latest of each recipient's
        first accepted call (the record file names a call by its message id)."""
        accepted = {c.message_id: c.accepted for c in self.calls if c.accepted is not None}
        first: dict[bytes, float] = {}
        with open(record, "rb") as lines:
            for line in lines:
                message_id, _, recipient = line.rstrip(b"\n").partition(b"\t")
                at = accepted.get(message_id.decode())
                if at is not None and (recipient not in first or at < first[recipient]):
                    first[recipient] = at
        return max(first.values(), default=None)


def backoff_steps(window_s: float, cap_s: float) -> int:
    """Calls one batch may make in `window_s` seconds if it waits one backoff step
    between calls: steps double from BACKOFF_FIRST_STEP_S up to `cap_s`, and jitter
    may shorten any to half (the first call is free)."""
    calls, elapsed, step = 1, 0.0, BACKOFF_FIRST_STEP_S
    while elapsed + step / 2 <= window_s:
        elapsed += step / 2
        calls += 1
        step = min(step * 2, cap_s)
    return calls


@dataclass(frozen=True)
class Target:
    target: str
    met: bool
    measured: str

    def as_dict(self) -> dict:
        return asdict(self)


def check(fault: Fault, figures: dict) -> list[Target]:
    """The issue's targets for this scenario, each checked against the figures."""
    targets = [
        Target("0 missing", figures["missing"] == 0, f"{figures['missing']:,} missing"),
        Target("0 ineligible readers mailed", figures["unexpected"] == 0, f"{figures['unexpected']:,} mailed"),
        _duplicates(fault, figures),
    ]
    if fault.missed:
        targets.insert(0, Target("the fault struck", False, fault.missed))
    if fault.recovery_target:
        targets.append(_recovery(fault, figures))
    targets += _scenario_targets(fault, figures)
    return targets


def _duplicates(fault: Fault, figures: dict) -> Target:
    duplicates, in_flight = figures["duplicates"], figures["in_flight_at_fault"]
    if fault.before_provider_call:
        return Target("0 duplicates (the fault struck before the provider call)", duplicates == 0,
                      f"{duplicates:,} duplicates")
    return Target("duplicates <= readers in flight at the fault", duplicates <= (in_flight or 0),
                  f"{duplicates:,} duplicates, {'?' if in_flight is None else f'{in_flight:,}'} in flight")


def _recovery(fault: Fault, figures: dict) -> Target:
    since, limit = fault.recovery_target
    key = "seconds_to_last_handoff" if since == "publish" else "seconds_to_last_handoff_after_fault_cleared"
    words = "of publishing" if since == "publish" else "of the fault clearing"
    value = figures[key]
    measured = "not every reader was handed off" if value is None else f"{value:.1f} s"
    return Target(f"last hand-off within {limit:g} s {words}", value is not None and value <= limit, measured)


def _scenario_targets(fault: Fault, figures: dict) -> list[Target]:
    calls = figures["calls"]
    if fault.name == "provider-outage":
        allowed = backoff_steps(fault.args.outage_seconds, fault.args.backoff_cap)
        most = calls["most_calls_to_one_batch_during_fault"]
        return [Target(f"no more than one call per batch per backoff step while down (<= {allowed} in"
                       f" {fault.args.outage_seconds:g} s, steps doubling from {BACKOFF_FIRST_STEP_S:g} s"
                       f" to --backoff-cap {fault.args.backoff_cap:g} s)", most <= allowed,
                       f"{most} calls to one batch")]
    if fault.name == "provider-rate-limit":
        ideal = figures["batches_total"] / fault.args.rate_limit
        limit = ideal * RATE_LIMIT_SLACK + RATE_LIMIT_GRACE_S
        took = figures["seconds_to_last_handoff"]
        failed = figures["batches_by_status"].get("failed", {}).get("n", 0)
        return [Target("no batch fails", failed == 0, f"{failed} batches failed"),
                Target(f"finishes in about readers / limit ({ideal:.1f} s; within {limit:.1f} s)",
                       took is not None and took <= limit,
                       "not every reader was handed off" if took is None else f"{took:.1f} s")]
    if fault.name == "provider-slow":
        return [Target("no batch taken over while alive", calls["overlapping_calls"] == 0,
                       f"{calls['overlapping_calls']} calls for a batch whose earlier call was unanswered")]
    if fault.name == "timeout-after-accept":
        most = calls["most_accepted_calls_for_one_batch"]
        return [Target("a timeout after sending is retried at most once", most <= 2,
                       f"one batch accepted {most} times")]
    return []


def outcome(targets: list[Target]) -> str:
    missed = [f"{t.target}: {t.measured}" for t in targets if not t.met]
    return "ok" if not missed else "missed " + "; ".join(missed)
