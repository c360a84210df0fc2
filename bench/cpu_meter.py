"""CPU time by part of the system, between two moments: the web processes, the Celery
worker and beat, the PostgreSQL backends serving the benchmark's database, and the
private Redis.

Why: on a shared two-core machine the throughput of a run moves with everyone else's
load, but the CPU a request costs moves much less. Milliseconds of CPU per signup,
split by where they are spent, say what to cut and compare runs made under different
loads; the ratio of the bare view's cost to the signup's whole cost is what the
throughput ratio would be on a machine the two had to themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psutil
import psycopg

Snapshot = dict[str, dict[int, float]]


@dataclass
class CpuMeter:
    """`groups` names root processes (each with its children); `dsn` and `database`
    find the PostgreSQL backends connected to that database."""

    groups: dict[str, list[int]]
    dsn: str
    database: str
    _seen: dict[int, psutil.Process] = field(default_factory=dict)

    def snapshot(self) -> Snapshot:
        found: Snapshot = {name: {} for name in [*self.groups, "postgres"]}
        for name, roots in self.groups.items():
            for pid in roots:
                for proc in self._tree(pid):
                    found[name][proc.pid] = self._cpu(proc)
                # The children it has reaped: gunicorn recycles a worker after 10,000
                # requests, and that worker's CPU must not leave the sum with it.
                found[name][-pid] = self._reaped(pid)
        for pid in self._backends():
            try:
                found["postgres"][pid] = self._cpu(self._process(pid))
            except psutil.Error:
                continue  # disconnected since it was listed
        return found

    @staticmethod
    def spent(before: Snapshot, after: Snapshot) -> dict[str, float]:
        """CPU seconds of each group between the two snapshots. A process that started
        in between counts from zero; one that exited counts through its parent's
        reaped-children times (only the group's root reaps: gunicorn's arbiter, the
        Celery worker's main process)."""
        def total(procs: dict[int, float]) -> float:
            # The group's live processes and its root's reaped children: a process
            # that exits moves from the first to the second, whole.
            return sum(seconds for seconds in procs.values() if seconds == seconds)  # NaN: gone meanwhile

        return {name: round(total(procs) - total(before.get(name, {})), 3) for name, procs in after.items()}

    def _tree(self, pid: int) -> list[psutil.Process]:
        try:
            root = self._process(pid)
            return [root, *(self._process(child.pid) for child in root.children(recursive=True))]
        except psutil.Error:
            return []

    def _process(self, pid: int) -> psutil.Process:
        # One Process object per pid, so that psutil can tell a reused pid apart.
        if pid not in self._seen:
            self._seen[pid] = psutil.Process(pid)
        return self._seen[pid]

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            return float("nan")  # gone: left out of the sum
        return times.user + times.system

    def _reaped(self, pid: int) -> float:
        try:
            times = self._process(pid).cpu_times()
        except psutil.Error:
            return float("nan")
        return times.children_user + times.children_system

    def _backends(self) -> list[int]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                                [self.database]).fetchall()
        return [pid for (pid,) in rows]
