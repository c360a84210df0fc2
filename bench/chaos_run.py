"""One chaos scenario from publishing to its figures: publish the alert, drive the
fault from a watch loop that tails the fake's record file and polls the alert's rows,
stop when the alert has finished (or the timeout), and measure.

Times are epoch seconds (`time.time()`) throughout, so that the fake's request log,
the alert's rows and the harness's own moments compare directly (one machine, one
clock).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.processes import mailgun_control, mailgun_stats, signal_group
from bench.targets import CallLog, check, outcome, read_calls
from bench.verify import verify

if TYPE_CHECKING:
    import redis

    from bench.faults import Fault
    from bench.jobs import AlertJob, Progress
    from bench.stores import PrivatePostgres, PrivateRedis
    from bench.topology import Topology

PROGRESS_EVERY = 5.0  # seconds between progress lines while readers are being handed off
QUIET_PROGRESS_EVERY = 30.0  # and while nothing changes
SETTLE_S = 1.0  # after the alert finishes, for late calls to land


class RecordTail:
    """The fake's record file ("<message id>\\t<recipient>" per accepted recipient),
    read as it grows: how many readers have had a copy so far."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "rb")  # noqa: SIM115  (read for the whole run, closed by close())
        self.rest = b""
        self.lines = 0
        self.readers: set[bytes] = set()

    @property
    def unique(self) -> int:
        return len(self.readers)

    def read(self) -> None:
        data = self.rest + self.file.read()
        complete, _, self.rest = data.rpartition(b"\n")
        if complete:
            for line in complete.split(b"\n"):
                self.readers.add(line.partition(b"\t")[2])
                self.lines += 1

    def close(self) -> None:
        self.file.close()


class ChaosRun:
    """The run of one scenario: what the fault needs to see and touch, and its log."""

    def __init__(self, args: argparse.Namespace, fault: Fault, topology: Topology, job: AlertJob,
                 expected: int, broker: redis.Redis, redis_server: PrivateRedis | None,
                 postgres: PrivatePostgres | None) -> None:
        self.args = args
        self.fault = fault
        self.topology = topology
        self.job = job
        self.expected = expected
        self.broker = broker
        self.redis = redis_server
        self.postgres = postgres
        self.tail = RecordTail(topology.record)
        self.t0 = time.time()
        self.notes: list[tuple[float, str]] = []
        self.samples: list[tuple[float, int]] = []  # (when, readers SENDING)
        self.last_look: Progress | None = None
        self.next_look = 0.0
        self.shown, self.shown_at = "", self.t0  # the last progress line, and when
        self.exits: list[dict] = []  # the worker or beat exiting by itself
        self.respawn: dict[str, float] = {}  # process -> when to start it again

    # -- for the faults -----------------------------------------------------------

    def note(self, text: str, at: float | None = None) -> None:
        """Evidence of what happened, printed with its time after publishing."""
        at = at or time.time()
        self.notes.append((at, text))
        print(f"  {at - self.t0:8.2f}s  {text}", flush=True)

    def look(self) -> Progress | None:
        progress = self.job.progress()
        if progress is not None:
            self.samples.append((time.time(), progress.sending_readers))
            self.last_look = progress
        return progress

    def fake_control(self, command: dict) -> dict:
        return mailgun_control(self.topology.fake_port, command)

    def fake_stats(self) -> dict:
        return mailgun_stats(self.topology.fake_port)

    def call_log(self) -> CallLog:
        return CallLog(read_calls(self.topology.request_log))

    def broker_backlog(self) -> str:
        """What a broker restart is about to lose: tasks queued and reserved."""
        from redis import RedisError

        queues = ("alerts", "transactional", "digests", "sweeps")
        try:
            pipe = self.broker.pipeline(transaction=False)
            for name in queues:
                pipe.llen(name)
            pipe.hlen("unacked")
            *lengths, reserved = pipe.execute()
        except RedisError as error:  # evidence only: the restart goes ahead
            return f"backlog unknown: {error}"
        queued = ", ".join(f"{n} queued on {name}" for name, n in zip(queues, lengths, strict=True) if n)
        return f"{queued or 'no task queued'}, {reserved} reserved by the worker"

    # -- the run ------------------------------------------------------------------

    def publish(self) -> None:
        self.t0 = time.time()
        self.fault.arm(self)
        self.t0 = self.shown_at = time.time()
        self.job.start()

    def watch(self) -> str:
        """Drive the fault until the alert has finished and the fault is over (or the
        timeout); returns why it stopped."""
        fault, finished_since = self.fault, None
        while True:
            self.tail.read()
            progress = self._look_if_due()
            fault.tick(self, progress)
            now = time.time()
            self._supervise(now)
            if self.topology.dead():  # the fake: nothing to measure against
                return f"process died: {', '.join(self.topology.dead())}"
            if progress is not None and progress.status != "sending":
                finished_since = finished_since or now
                if not fault.started_at and not fault.missed:
                    fault.give_up(self, f"the alert was {progress.status} before the fault's moment")
                if now - finished_since >= SETTLE_S and (fault.over(now) or fault.may_end_before_cleared()):
                    return f"alert {progress.status}"
            elif progress is not None:
                finished_since = None
            since = max(fault.cleared_at or fault.started_at or self.t0, self.t0)
            if now - since > self.args.timeout:
                return f"timed out {self.args.timeout:.0f} s after the fault" + (
                    " cleared" if fault.cleared_at else "")
            self._show_progress(now, answering=progress is not None)
            time.sleep(fault.poll_interval())

    def _show_progress(self, now: float, *, answering: bool) -> None:
        """A line every PROGRESS_EVERY seconds while it changes, else every
        QUIET_PROGRESS_EVERY (a 600-second outage would print 120 alike)."""
        since = now - self.shown_at
        if since < PROGRESS_EVERY:
            return
        status = self.last_look.status if self.last_look else "?"
        line = (f"{self.tail.unique:,}/{self.expected:,} readers handed off, {self.tail.lines:,} copies"
                f" (alert {status}{'' if answering else ', database not answering'})")
        if line != self.shown or since >= QUIET_PROGRESS_EVERY:
            print(f"  {now - self.t0:8.2f}s  {line}", flush=True)
            self.shown, self.shown_at = line, now

    def _supervise(self, now: float) -> None:
        """Start the worker or beat again --respawn-after seconds after it exited by
        itself (not killed by the fault), as a process supervisor would in production.
        The exit is evidence: Celery gives up on some broker errors."""
        for name, code, error in self.topology.exited():
            self.exits.append({"process": name, "exit_code": code, "at_s": round(now - self.t0, 3),
                               "last_error": error})
            self.note(f"the {name} exited by itself (code {code}): {error or 'no error logged'};"
                      f" starting it again in {self.args.respawn_after:g} s")
            self.respawn[name] = now + self.args.respawn_after
        for name, due in list(self.respawn.items()):
            if now >= due:
                proc = self.topology.start_worker() if name == "worker" else self.topology.start_beat()
                del self.respawn[name]
                self.note(f"{name} started again as pid {proc.pid}")

    def _look_if_due(self) -> Progress | None:
        """A new look at the alert when the fault's look interval has passed, else the
        last one; None when the database does not answer."""
        now = time.time()
        if now < self.next_look:
            return self.last_look
        self.next_look = now + self.fault.look_interval()
        return self.look()

    def stop_senders(self) -> None:
        """Stop the worker and beat before measuring, so nothing is sent meanwhile;
        then wait until the fake has answered every call it received."""
        senders = [proc for proc in (self.topology.worker, self.topology.beat) if proc is not None]
        for proc in senders:
            signal_group(proc, signal.SIGTERM)  # a warm shutdown: running tasks finish
        for proc in senders:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
        deadline = time.time() + 10 + self.args.hang_seconds + self.args.slow_seconds
        while time.time() < deadline:
            logged = sum(1 for _ in self.topology.request_log.open())
            if self.fake_stats().get("requests", 0) <= logged:
                break
            time.sleep(0.2)
        self.tail.read()

    # -- the figures --------------------------------------------------------------

    def figures(self, ended_because: str) -> dict:
        """Everything measured, the targets checked, and the outcome."""
        fault = self.fault
        fault.finish(self)
        calls = self.call_log()
        checked = verify(self.job, "alert", self.topology.record, 0, "mailgun")
        summary = self.job.summary(self.t0)
        # The fault's window: from striking to clearing, or to now for a lasting one.
        window_end = fault.cleared_at if fault.cleared_at and not fault.lasting else time.time()
        during = calls.between(fault.started_at, window_end) if fault.started_at else []
        figures = {
            "scenario": fault.name,
            "subscribers": self.expected,
            "missing": checked["missing"],
            "duplicates": checked["duplicates"],
            "unexpected": checked["unexpected"],
            "in_flight_at_fault": self._in_flight(window_end, calls),
            "provider_calls_during_fault": len(during),
            **self._timings(calls, summary, complete=checked["missing"] == 0),
            "fault": {
                "about": fault.about,
                "struck_s": _since(fault.started_at, self.t0),
                "cleared_s": _since(fault.cleared_at, self.t0),
                "lasting": fault.lasting,
                "injected": bool(fault.started_at) and not fault.missed,
                "not_injected_because": fault.missed or None,
            },
            "calls": self._call_figures(calls, during, window_end),
            "ended_because": ended_because,
            "unexpected_exits": self.exits,
            "batches_total": sum(row["n"] for row in summary["batches"].values()),
            "batches_by_status": summary["batches"],
            "batch_errors": summary["batch_errors"],
            "alert": summary,
            "provider_stats": self.fake_stats(),
            "verification": checked,
            "evidence": [f"{at - self.t0:.2f}s {text}" for at, text in self.notes],
        }
        targets = check(fault, figures)
        figures["targets"] = [t.as_dict() for t in targets]
        figures["outcome"] = outcome(targets)
        return figures

    def _timings(self, calls: CallLog, summary: dict, *, complete: bool) -> dict:
        """Seconds to the last hand-off (the fake's last accepted call, else the alert
        row's last_handoff_at) from publishing and from the fault clearing (striking,
        for a lasting fault); null while readers are missing."""
        fault = self.fault
        last = calls.last_accepted() or _epoch(summary.get("last_handoff_at_s"), self.t0)
        every = calls.every_reader_at(self.topology.record)
        reference = fault.cleared_at or fault.started_at
        return {
            "seconds_to_last_handoff_after_fault_cleared":
                _round(last - reference) if complete and last and reference else None,
            "seconds_to_last_handoff": _round(last - self.t0) if complete and last else None,
            "seconds_to_last_seen_handoff": _round(last - self.t0) if last else None,
            "seconds_to_every_reader": _round(every - self.t0) if complete and every else None,
        }

    def _call_figures(self, calls: CallLog, during: list, window_end: float) -> dict:
        struck = self.fault.started_at
        most, most_times = calls.busiest_batch(struck, window_end) if struck else (0, [])
        return {
            "total": len(calls.calls),
            "by_status": calls.status_counts(calls.calls),
            "during_fault_by_status": calls.status_counts(during),
            "most_calls_to_one_batch_during_fault": most,
            "their_times_s_after_fault": most_times,
            "most_accepted_calls_for_one_batch": calls.most_accepted_per_batch(),
            "overlapping_calls": calls.overlapping(),
        }

    def _in_flight(self, window_end: float, calls: CallLog) -> int | None:
        """Readers in batches SENDING when the fault struck; for a fault that lasted,
        the most seen at any look while it lasted (or what the fault counts itself)."""
        fault = self.fault
        if fault.started_at is None:
            return None
        counted = fault.in_flight_from_calls(calls)
        if counted is not None:
            return counted
        seen = [n for at, n in self.samples if fault.started_at <= at <= window_end]
        return max([fault.in_flight or 0, *seen])


def _since(moment: float | None, t0: float) -> float | None:
    return None if moment is None else round(moment - t0, 3)


def _epoch(seconds: float | None, t0: float) -> float | None:
    return None if seconds is None else t0 + seconds


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
