"""The faults of the chaos benchmark (bench/chaos.py), one class per scenario: what it
needs (a private broker or database), how it strikes, when it is over, and the
recovery target the issue sets for it.

A fault is driven by the run's watch loop (bench/chaos_run.py): `arm` just before the
alert is published, then `tick` at every poll with the latest look at the alert
(`Progress`, None while the database does not answer). It records when it struck
(`started_at`) and when it was cleared (`cleared_at`: the restart done, the outage
over), both in epoch seconds, with the evidence that it really struck.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from typing import IO, TYPE_CHECKING, ClassVar

from bench.topology import io_bytes

if TYPE_CHECKING:
    from bench.chaos_run import ChaosRun
    from bench.jobs import Progress
    from bench.targets import CallLog

# Scenario sizes from the issue: a kill or restart needs a send long enough to land in
# (200,000 readers take about 2.5 s on a good day); the provider faults last for a time
# of their own, and 20,000 readers are enough to load every batch with retries.
BIG, SMALL = 200_000, 20_000


class Fault:
    """One scenario's fault. Subclasses set the class attributes and override the
    steps they need."""

    name: ClassVar[str]
    about: ClassVar[str]  # one line for --help and the report
    default_subscribers: ClassVar[int] = BIG
    private_redis: ClassVar[bool] = False
    private_postgres: ClassVar[bool] = False
    # Struck before any provider call it affects: no reader can have had a copy the
    # engine did not record, so the target is 0 duplicates rather than <= in flight.
    before_provider_call: ClassVar[bool] = False
    # A fault that lasts to the end of the run has no "cleared" moment; recovery is
    # timed from the moment it struck.
    lasting: ClassVar[bool] = False
    # (measured from, seconds): "publish" or "cleared"; None for no time target.
    recovery_target: ClassVar[tuple[str, float] | None] = None

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started_at: float | None = None
        self.cleared_at: float | None = None
        self.in_flight: int | None = None  # readers SENDING at the strike
        self.missed = ""  # why the fault could not strike, if it could not

    # -- what the scenario needs --------------------------------------------------

    def worker_env(self) -> dict[str, str]:
        return {}

    def flags(self) -> list[str]:
        """This scenario's options, for the command that reproduces it."""
        return []

    # -- the steps ----------------------------------------------------------------

    def arm(self, run: ChaosRun) -> None:
        """Just before publishing."""

    def tick(self, run: ChaosRun, progress: Progress | None) -> None:
        """At every poll after publishing."""

    def poll_interval(self) -> float:
        """Seconds between polls: short until the fault has struck."""
        return 0.1 if self.started_at or self.missed else 0.005

    def look_interval(self) -> float:
        """Seconds between looks at the alert's rows: every poll until the fault has
        struck (its moment depends on them), then a few times a second."""
        return 0.1 if self.started_at or self.missed else 0.0

    def over(self, now: float) -> bool:
        """Whether the fault has struck and been cleared (or could not strike)."""
        if self.missed:
            return True
        if self.lasting:
            return self.started_at is not None
        return self.cleared_at is not None and now >= self.cleared_at

    def may_end_before_cleared(self) -> bool:
        """Whether a run whose alert has finished may end while the fault lasts (a
        finished alert is not resumed by the provider's return)."""
        return self.lasting

    def finish(self, run: ChaosRun) -> None:
        """After the run, before the figures: evidence of what the fault did."""

    def in_flight_from_calls(self, calls: CallLog) -> int | None:
        """Readers in flight at the fault as the fake saw them, for a fault that strikes
        call by call; None to read them from the batch table (the default)."""
        return None

    # -- helpers for subclasses ---------------------------------------------------

    def strike(self, run: ChaosRun, what: str, progress: Progress | None = None,
               at: float | None = None) -> None:
        """Record that the fault struck now (or `at`), with the readers in flight read
        from the batch table at this moment (or given, when the table is about to go
        away)."""
        self.started_at = at or time.time()
        look = progress if progress is not None else run.look()
        self.in_flight = look.sending_readers if look else None
        sending = f"{len(look.sending)} batches SENDING ({look.sending_readers:,} readers)" if look else "?"
        run.note(f"{what}; {sending}, {run.tail.unique:,}/{run.expected:,} readers handed off so far")

    def clear(self, run: ChaosRun, what: str, at: float | None = None) -> None:
        self.cleared_at = at or time.time()
        run.note(what, at=self.cleared_at)

    def give_up(self, run: ChaosRun, why: str) -> None:
        self.missed = why
        run.note(f"fault NOT injected: {why}")


class MidSend(Fault):
    """A fault that strikes mid-send: the moment a provider call reaches the fake once
    --fault-at of the readers have been handed off. The calling process then holds a
    claimed batch that it has not recorded yet, whatever the engine does around it.
    The fake logs each call's arrival, with the caller's port, before answering it."""

    # A logged arrival older than this may have been answered already.
    FRESH_S = 0.005

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.arrivals: IO[str] | None = None
        self.partial = ""  # a line of the arrivals log read before it was complete
        self.call_arrived: float | None = None  # the provider call it struck during

    def flags(self) -> list[str]:
        return ["--fault-at", str(self.args.fault_at)]

    def arm(self, run: ChaosRun) -> None:
        self.arrivals = open(run.topology.arrivals)  # noqa: SIM115  (closed at the strike or by finish())
        self.arrivals.seek(0, os.SEEK_END)

    def poll_interval(self) -> float:
        return 0.1 if self.started_at or self.missed else 0.0005

    def look_interval(self) -> float:
        # The moment is read from the arrivals log, quicker than the database; the rows
        # only say whether the alert is still sending.
        return 0.1 if self.started_at or self.missed else 0.05

    def moment(self, run: ChaosRun, progress: Progress | None) -> int | None:
        """The client port of a provider call that has just arrived, if this is the
        moment to strike; None otherwise (or if the alert finished first)."""
        if self.started_at or self.missed or self.arrivals is None:
            return None
        arrived = self._new_arrivals()
        if progress is not None and progress.status != "sending":
            self.give_up(run, f"the alert was {progress.status} before a provider call was caught arriving"
                              f" after {self.args.fault_at:.0%} of the readers were handed off")
            return None
        if not arrived:
            return None
        if run.tail.unique < self.args.fault_at * run.expected:
            # Learn which process has which connection to the fake now (a millisecond
            # each, for a port not seen before), so the strike need not.
            run.topology.pool_process_calling({port for _, port in arrived})
            return None
        at, port = arrived[-1]
        if time.time() - at > self.FRESH_S:
            return None
        self.call_arrived = at
        return port

    def _new_arrivals(self) -> list[tuple[float, int]]:
        """(arrived, client port) of the calls logged since the last poll."""
        text = self.partial + self.arrivals.read()
        complete, _, self.partial = text.rpartition("\n")
        arrivals = []
        for line in complete.splitlines():
            at, _, port = line.partition("\t")
            arrivals.append((float(at), int(port)))
        return arrivals

    def strike(self, run: ChaosRun, what: str, progress: Progress | None = None,
               at: float | None = None) -> None:
        at = at or time.time()
        super().strike(run, f"{what}, {at - (self.call_arrived or at):.4f} s after a provider call"
                            " reached the fake", progress, at)
        if self.arrivals is not None:
            self.arrivals.close()
            self.arrivals = None

    def finish(self, run: ChaosRun) -> None:
        """What became of the call it struck during."""
        if self.arrivals is not None:
            self.arrivals.close()
            self.arrivals = None
        call = run.call_log().arrived_at(self.call_arrived) if self.call_arrived else None
        if call is not None and self.started_at:
            when = "after" if call.answered > self.started_at else "before"
            run.note(f"the call it struck during (the batch of {call.batch}) was answered {call.status}"
                     f" {abs(call.answered - self.started_at):.4f} s {when} the fault"
                     f"{' (accepted: its readers have it)' if call.accepted else ''}")


class KillChildCut(Fault):
    name = "kill-child-cut"
    about = ("SIGKILL the pool process that is cutting the audience into batches, fanned_out_at"
             " still null: as a chunk of batches has just been committed (while they are being"
             " queued), or once --cut-batches exist")
    before_provider_call = True
    recovery_target = ("publish", 20.0)

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.baseline: dict[int, int] = {}
        self.cutter: int | None = None
        self.seen_cut = 0  # batches at the last look

    def flags(self) -> list[str]:
        return ["--cut-batches", str(self.args.cut_batches)] if self.args.cut_batches else []

    def arm(self, run: ChaosRun) -> None:
        # The pool is idle now (warmed up, no task queued): the first process to
        # read anything after publishing has taken the fan-out task.
        self.baseline = {pid: io_bytes(pid) for pid in run.topology.pool_children()}

    def poll_interval(self) -> float:
        return 0.1 if self.started_at or self.missed else 0.001

    def tick(self, run: ChaosRun, progress: Progress | None) -> None:
        if self.started_at or self.missed:
            return
        if self.cutter is None:
            moved = [pid for pid, seen in self.baseline.items() if io_bytes(pid) != seen]
            if moved:
                self.cutter = moved[0]
                run.note(f"pool process {self.cutter} took the first task after publishing: the cut")
        if progress is None:
            return
        if progress.fanned_out or progress.status != "sending":
            self.give_up(run, f"the cut had finished (fanned_out_at set, {progress.cut} batches)"
                              " before the kill")
        elif self.cutter and self._moment(progress.cut):
            at = time.time()
            os.kill(self.cutter, signal.SIGKILL)
            self.strike(run, f"SIGKILLed pool process {self.cutter} during the cut: {progress.cut} batches cut"
                             f" ({progress.cut - self.seen_cut} since the look before), fanned_out_at null", at=at)
            self.cleared_at = self.started_at
        self.seen_cut = progress.cut

    def _moment(self, cut: int) -> bool:
        """With --cut-batches K, once K batches exist; else as soon as several batches
        appear at once: a chunk has just been committed, and the cut is queueing it."""
        if self.args.cut_batches:
            return cut >= self.args.cut_batches
        return cut - self.seen_cut >= 2

    def finish(self, run: ChaosRun) -> None:
        again = run.topology.redelivered_tasks().get("alerts.fan_out_alert", 0)
        run.note(f"the fan-out task was handed out again after the kill ({again} task id(s) received twice):"
                 " the killed process was running it" if again else
                 "no fan-out task was received twice: the killed process may not have been the cutter")


class KillChildSend(MidSend):
    name = "kill-child-send"
    about = ("SIGKILL one pool process mid-send (--fault-at of the readers handed off): the one"
             " whose provider call has just reached the fake, so its batch is claimed and unrecorded")
    recovery_target = ("publish", 20.0)

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.sending_at_strike: set[int] = set()
        self.checked = False

    def tick(self, run: ChaosRun, progress: Progress | None) -> None:
        port = self.moment(run, progress)
        victim = run.topology.pool_process_calling({port}) if port else None
        if victim:
            at = time.time()
            os.kill(victim, signal.SIGKILL)
            self.strike(run, f"SIGKILLed pool process {victim}, the caller (port {port})", at=at)
            self.cleared_at = self.started_at
            look = run.last_look
            self.sending_at_strike = {pk for pk, _ in look.sending} if look else set()
        elif not self.checked and self.started_at and time.time() > self.started_at + 2 and progress:
            self.checked = True
            stuck = self.sending_at_strike & {pk for pk, _ in progress.sending}
            run.note(f"2 s after the kill, batch(es) {sorted(stuck)} still SENDING: held by the dead process"
                     if stuck else "2 s after the kill no batch SENDING at the kill is still SENDING")

    def finish(self, run: ChaosRun) -> None:
        super().finish(run)
        again = run.topology.redelivered_tasks().get("alerts.send_batch", 0)
        run.note(f"{again} send_batch task id(s) were received twice (handed out again after the kill)")


class KillWorker(MidSend):
    name = "kill-worker"
    about = ("SIGKILL the whole worker (main process and pool) mid-send and start it again"
             " --restart-after seconds later")
    recovery_target = ("cleared", 15.0)

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.ready_at: float | None = None

    def flags(self) -> list[str]:
        return [*super().flags(), "--restart-after", str(self.args.restart_after)]

    def tick(self, run: ChaosRun, progress: Progress | None) -> None:
        if self.moment(run, progress):
            at = time.time()
            pids = run.topology.kill_worker()
            self.strike(run, f"SIGKILLed the worker: main process {pids[0]} and pool {pids[1:]}", at=at)
        elif self.started_at and self.cleared_at is None and time.time() >= self.started_at + self.args.restart_after:
            proc = run.topology.start_worker()
            self.clear(run, f"worker restarted as pid {proc.pid}")
        elif self.cleared_at and self.ready_at is None and run.topology.worker_ready_logged():
            self.ready_at = time.time()
            run.note("the restarted worker logged 'ready'")


class RedisRestart(MidSend):
    name = "redis-restart"
    about = ("SIGKILL the broker (a private redis-server without persistence) mid-send and"
             " start it again on the same port --down-seconds later: every queued task is lost")
    private_redis = True
    recovery_target = ("cleared", 30.0)

    def flags(self) -> list[str]:
        return [*super().flags(), "--down-seconds", str(self.args.down_seconds)]

    def tick(self, run: ChaosRun, progress: Progress | None) -> None:
        redis = run.redis
        if self.moment(run, progress):
            lost = run.broker_backlog()  # one round trip, a millisecond
            at = time.time()
            pid = redis.kill()
            self.strike(run, f"SIGKILLed redis-server {pid} on :{redis.port}, losing {lost}", at=at)
        elif self.started_at and self.cleared_at is None and time.time() >= self.started_at + self.args.down_seconds:
            answered = redis.start()
            self.clear(run, f"redis-server restarted empty as pid {redis.proc.pid}, answering PING", at=answered)


class PostgresRestart(MidSend):
    name = "postgres-restart"
    about = ("restart the database (a private cluster: pg_ctl stop -m --pg-stop-mode, start"
             " --down-seconds later) mid-send")
    private_postgres = True
    recovery_target = ("cleared", 30.0)

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.stopped_at: float | None = None

    def flags(self) -> list[str]:
        return [*super().flags(), "--down-seconds", str(self.args.down_seconds),
                "--pg-stop-mode", self.args.pg_stop_mode]

    def tick(self, run: ChaosRun, progress: Progress | None) -> None:
        pg = run.postgres
        if self.moment(run, progress):
            pid = pg.postmaster_pid()
            # Readers in flight are read now: the table is gone in a moment.
            self.strike(run, f"stopping PostgreSQL {pid} on :{pg.port} (pg_ctl stop -m {self.args.pg_stop_mode})",
                        progress=run.look())
            pg.stop(self.args.pg_stop_mode)
            self.stopped_at = time.time()
            run.note("PostgreSQL stopped", at=self.stopped_at)
        elif self.stopped_at and self.cleared_at is None and time.time() >= self.stopped_at + self.args.down_seconds:
            ready = pg.start()
            self.clear(run, f"PostgreSQL started again as pid {pg.postmaster_pid()}, accepting connections",
                       at=ready)


class ProviderOutage(Fault):
    name = "provider-outage"
    about = "the fake answers every call with 503 for --outage-seconds from the moment of publishing"
    default_subscribers = SMALL
    before_provider_call = True
    recovery_target = ("cleared", 20.0)

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.announced = False

    def flags(self) -> list[str]:
        return ["--outage-seconds", str(self.args.outage_seconds), "--backoff-cap", str(self.args.backoff_cap)]

    def arm(self, run: ChaosRun) -> None:
        until = run.fake_control({"outage_seconds": self.args.outage_seconds})["outage_until"]
        self.started_at = until - self.args.outage_seconds
        self.cleared_at = until
        self.in_flight = 0
        run.note(f"the fake answers 503 until {self.args.outage_seconds:g} s from now", at=self.started_at)

    def poll_interval(self) -> float:
        return 0.1

    def tick(self, run: ChaosRun, progress: Progress | None) -> None:
        if self.cleared_at and time.time() >= self.cleared_at and not self.announced:
            self.announced = True
            run.note("the outage is over: the fake answers again", at=self.cleared_at)

    def may_end_before_cleared(self) -> bool:
        return True

    def finish(self, run: ChaosRun) -> None:
        run.note(f"the fake refused {run.fake_stats().get('refused_outage', 0):,} calls with 503 in all")


class ProviderRateLimit(Fault):
    name = "provider-rate-limit"
    about = "the fake answers 429 with Retry-After to calls beyond --rate-limit per second, for the whole run"
    default_subscribers = SMALL
    before_provider_call = True
    lasting = True

    def flags(self) -> list[str]:
        return ["--rate-limit", str(self.args.rate_limit), "--retry-after", str(self.args.retry_after)]

    def arm(self, run: ChaosRun) -> None:
        run.fake_control({"rate_limit": self.args.rate_limit, "retry_after": self.args.retry_after})
        self.started_at = time.time()
        self.in_flight = 0
        run.note(f"the fake lets {self.args.rate_limit} calls a second through and answers the rest 429,"
                 f" Retry-After {self.args.retry_after}", at=self.started_at)

    def poll_interval(self) -> float:
        return 0.1

    def finish(self, run: ChaosRun) -> None:
        run.note(f"the fake answered {run.fake_stats().get('refused_rate_limit', 0):,} calls with 429 in all")


class ProviderSlow(Fault):
    name = "provider-slow"
    about = "the fake takes --slow-seconds over every call, for the whole run"
    default_subscribers = SMALL
    before_provider_call = True
    lasting = True

    def flags(self) -> list[str]:
        return ["--slow-seconds", str(self.args.slow_seconds)]

    def arm(self, run: ChaosRun) -> None:
        run.fake_control({"delay": self.args.slow_seconds})
        self.started_at = time.time()
        self.in_flight = 0
        run.note(f"the fake takes {self.args.slow_seconds:g} s over every call", at=self.started_at)

    def poll_interval(self) -> float:
        return 0.1

    def finish(self, run: ChaosRun) -> None:
        run.note(f"the fake delayed {run.fake_stats().get('delayed', 0):,} calls")


class TimeoutAfterAccept(Fault):
    name = "timeout-after-accept"
    about = ("the fake accepts the first --timeouts calls (records them as handed off) and holds"
             " each answer --hang-seconds, past the workers' --client-timeout")
    default_subscribers = SMALL

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.next_look = 0.0

    def worker_env(self) -> dict[str, str]:
        return {"ANYMAIL_REQUESTS_TIMEOUT": str(self.args.client_timeout)}

    def flags(self) -> list[str]:
        return ["--timeouts", str(self.args.timeouts), "--hang-seconds", str(self.args.hang_seconds),
                "--client-timeout", str(self.args.client_timeout)]

    def arm(self, run: ChaosRun) -> None:
        run.fake_control({"accept_then_hang": self.args.timeouts, "hang_seconds": self.args.hang_seconds})
        self.started_at = time.time()
        self.in_flight = 0
        run.note(f"the fake accepts the next {self.args.timeouts} calls and answers each after"
                 f" {self.args.hang_seconds:g} s (client timeout {self.args.client_timeout:g} s)",
                 at=self.started_at)

    def poll_interval(self) -> float:
        return 0.1

    def tick(self, run: ChaosRun, progress: Progress | None) -> None:
        if self.cleared_at or time.time() < self.next_look:
            return
        self.next_look = time.time() + 0.25
        stats = run.fake_stats()
        if stats.get("hang_pending") == 0 and stats.get("held", 0) == stats.get("held_released", -1):
            # Refined afterwards from the request log: when the last held answer went out.
            self.clear(run, f"all {stats['held']} held calls answered (each too late for the client)")

    def may_end_before_cleared(self) -> bool:
        return True

    def in_flight_from_calls(self, calls: CallLog) -> int | None:
        # It strikes each held call: the readers of those calls were in flight, each
        # at its own moment, and may have the alert twice.
        return sum(c.recipients for c in calls.calls if c.fault == "held")

    def finish(self, run: ChaosRun) -> None:
        held = [c for c in run.call_log().calls if c.fault == "held"]
        if held and self.cleared_at:
            # The request log knows when the last held answer went out to the
            # millisecond; the poll only to a quarter of a second.
            self.cleared_at = max(c.answered for c in held)
        run.note(f"the fake accepted and then held {len(held)} calls ({sum(c.recipients for c in held):,}"
                 f" readers), answering each {self.args.hang_seconds:g} s later")


SCENARIOS: dict[str, type[Fault]] = {cls.name: cls for cls in (
    KillChildCut, KillChildSend, KillWorker, RedisRestart, PostgresRestart,
    ProviderOutage, ProviderRateLimit, ProviderSlow, TimeoutAfterAccept)}
