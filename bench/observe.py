"""Watching a run from outside: the workers' memory and CPU (and PostgreSQL's and
Redis's), how busy the machine and its host are, and the fake's record file, tailed
until every expected recipient has been handed off."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

    from bench.jobs import Job
    from bench.processes import Processes

RSS_EVERY = 0.05  # seconds between worker memory samples


class ProcessSampler:
    """Resident memory and CPU time of the workers (each with its pool children) and
    of the fake provider, sampled from outside with psutil."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        import psutil

        self.psutil = psutil
        self.roots = {name: [psutil.Process(pid) for pid in pids] for name, pids in groups.items()}
        self.procs: dict[str, list[psutil.Process]] = {}
        self.peak_single = 0  # workers only
        self.peak_sum = 0
        self.per_pid: dict[int, int] = {}
        self.cpu: dict[int, tuple[str, float, float]] = {}  # pid -> (group, first, last)
        self.samples = 0
        self.refreshed = 0.0
        self.refresh()

    def refresh(self) -> None:
        self.procs = {}
        for name, roots in self.roots.items():
            procs = []
            for root in roots:
                try:
                    procs += [root, *root.children(recursive=True)]
                except self.psutil.Error:
                    pass
            self.procs[name] = procs
        self.refreshed = time.monotonic()

    def sample(self) -> None:
        if time.monotonic() - self.refreshed > 0.5:
            self.refresh()
        total = 0
        for name, procs in self.procs.items():
            for proc in procs:
                try:
                    with proc.oneshot():
                        rss, times = proc.memory_info().rss, proc.cpu_times()
                except self.psutil.Error:
                    continue
                used = times.user + times.system
                first = self.cpu.get(proc.pid, (name, used, used))[1]
                self.cpu[proc.pid] = (name, first, used)
                if name == "workers":
                    total += rss
                    self.peak_single = max(self.peak_single, rss)
                    self.per_pid[proc.pid] = max(self.per_pid.get(proc.pid, 0), rss)
        self.peak_sum = max(self.peak_sum, total)
        self.samples += 1

    def cpu_seconds(self, group: str) -> float:
        return round(sum(last - first for name, first, last in self.cpu.values() if name == group), 2)


def service_pids() -> dict[str, list[int]]:
    """The local PostgreSQL and Redis servers (each with its children), to report their
    CPU time too: on one machine the database is a large share of a send's cost."""
    import psutil

    found: dict[str, list[int]] = {"postgres": [], "redis": []}
    for proc in psutil.process_iter(["name", "ppid"]):
        try:
            name = proc.info["name"] or ""
            if name == "postgres" and psutil.Process(proc.info["ppid"]).name() != "postgres":
                found["postgres"].append(proc.pid)
            elif name.startswith("redis-server"):
                found["redis"].append(proc.pid)
        except psutil.Error:
            continue
    return found


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (all processes, all users)."""
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def background_load(quiet_below: float, max_wait: float) -> dict:
    """How busy the machine is just before publishing. Other people's test runs share
    these cores and slow a run down, so wait (up to max_wait) for a quiet second."""
    import psutil

    started = time.monotonic()
    while True:
        busy = psutil.cpu_percent(interval=1.0)
        waited = time.monotonic() - started
        if busy < quiet_below or waited >= max_wait:
            break
        print(f"  machine {busy:.0f}% busy (someone else's load): waiting for it to drop"
              f" below {quiet_below:.0f}% ({waited:.0f}/{max_wait:.0f} s)", flush=True)
    return {"cpu_percent": busy, "loadavg_1m": round(os.getloadavg()[0], 2),
            "waited_s": round(waited, 1), "quiet": busy < quiet_below, "reference_s": reference_loop()}


def reference_loop() -> float:
    """Seconds one fixed piece of pure Python work takes right now. These cores are
    virtual: when the host is busy with other machines, everything here runs slower
    in proportion, including this loop, though this machine looks idle."""
    started = time.perf_counter()
    sum(range(10_000_000))
    return round(time.perf_counter() - started, 3)


@dataclass
class Observation:
    record_lines: int = 0
    first_handoff_s: float | None = None
    last_handoff_s: float | None = None
    alert_status: str = ""
    ended_because: str = ""
    waited_s: float = 0.0
    killed: str = ""


def watch(record: Path, offset: int, expected: int, t0: float, job: Job,
          sampler: ProcessSampler, procs: Processes, timeout: float, stall: float,
          kill_at: float | None = None) -> Observation:
    """Tail the fake's record file until every expected recipient is recorded and the
    alert (or digest run) is finished, it finishes short, a process dies, or time runs out."""
    seen = Observation()
    finished = ("sent", "failed", "cancelled")
    next_rss = next_db = next_progress = last_change = t0
    finished_short_at = None
    status_seen = ""
    with open(record, "rb") as tail:
        tail.seek(offset)
        while True:
            chunk = tail.read()
            now = time.time()
            if chunk and (lines := chunk.count(b"\n")):
                seen.first_handoff_s = seen.first_handoff_s or now - t0
                seen.last_handoff_s = now - t0
                seen.record_lines += lines
                last_change = now
            if now >= next_rss:
                sampler.sample()
                next_rss = now + RSS_EVERY
            if now >= next_db:
                seen.alert_status = job.status()
                next_db = now + (0.05 if seen.record_lines >= expected else 0.25)
                if seen.alert_status in finished:
                    if seen.record_lines >= expected:
                        # A late duplicate would appear right after: look once more.
                        time.sleep(0.5)
                        seen.record_lines += tail.read().count(b"\n")
                        seen.ended_because = "done"
                        break
                    finished_short_at = finished_short_at or now
                    if now - finished_short_at > 3:
                        seen.ended_because = f"{job.kind} {seen.alert_status} with recipients missing"
                        break
            if now >= next_progress:
                if now - t0 > 5:
                    print(f"  {now - t0:6.1f}s  {seen.record_lines:>9,} / {expected:,} handed off"
                          f"  ({job.kind} {seen.alert_status})", flush=True)
                next_progress = now + 5
                if procs.dead():
                    seen.ended_because = f"process died: {', '.join(procs.dead())}"
                    break
                if seen.alert_status != status_seen:
                    status_seen, last_change = seen.alert_status, now
                if now - last_change > stall:
                    # Nothing handed off and the alert unchanged: a batch is stuck (a task
                    # that raised leaves it SENDING until its lease expires and a sweeper,
                    # not running here, re-queues it).
                    seen.ended_because = (f"stalled: nothing handed off for {stall:.0f}s,"
                                          f" {job.kind} still {seen.alert_status}")
                    break
            if now - t0 > timeout:
                seen.ended_because = f"timed out after {timeout:.0f}s"
                break
            if kill_at is not None and not seen.killed and now - t0 >= kill_at:
                seen.killed = kill_pool_child(sampler, now - t0)
            time.sleep(0.001 if seen.first_handoff_s is None else 0.005)
    seen.waited_s = time.time() - t0
    return seen


# Here rather than with the other process code: the victim is chosen from what the
# sampler has seen (the workers' process tree and each child's CPU time).
def kill_pool_child(sampler: ProcessSampler, at: float) -> str:
    """SIGKILL one prefork child (ours), as the OOM killer or a crash would: the one
    that has used the most CPU, so most likely mid-send."""
    roots = {proc.pid for procs in sampler.roots.values() for proc in procs}
    children = [proc for proc in sampler.procs.get("workers", []) if proc.pid not in roots]
    if not children:
        return "no pool child to kill"
    victim = max(children, key=lambda proc: sampler.cpu.get(proc.pid, ("", 0.0, 0.0))[2])
    os.kill(victim.pid, signal.SIGKILL)
    print(f"  killed pool child {victim.pid} at {at:.2f}s", flush=True)
    return f"pid {victim.pid} at {at:.2f}s"
