"""The production topology the chaos benchmark runs (bench/chaos.py): the fake provider,
one Celery worker on every queue, and Celery beat, each started (and the worker
restarted) by the benchmark, plus what it needs to see of them from outside: the
worker's pool processes and how much I/O each has done, and the worker's log."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.processes import Processes, start_fake

if TYPE_CHECKING:
    from celery import Celery

# As production runs it (README), on every queue, including the one the sweeper will
# move to; three pool processes, as in bench/fanout.py.
QUEUES = "alerts,transactional,digests,sweeps"
CONCURRENCY = 3
READY_TIMEOUT = 90  # seconds for a worker to answer a ping after starting


class Topology:
    """The fake provider, the worker and beat of one scenario."""

    def __init__(self, procs: Processes, env: dict[str, str], run_dir: Path) -> None:
        self.procs = procs
        self.env = env
        self.run_dir = run_dir
        self.node = f"chaos-{os.getpid()}"
        self.worker: subprocess.Popen | None = None
        self.beat: subprocess.Popen | None = None
        self.fake: subprocess.Popen | None = None
        self.fake_port = 0
        self.record = run_dir / "accepted.tsv"
        self.request_log = run_dir / "requests.tsv"
        self.arrivals = run_dir / "arrivals.tsv"
        self.worker_logs: list[Path] = []
        self._port_owner: dict[int, int] = {}  # local port of a connection to the fake -> pool pid

    def start_fake(self) -> int:
        self.request_log.touch()
        self.arrivals.touch()
        self.fake_port, self.record, self.fake = start_fake(
            self.procs, "mailgun", self.run_dir,
            ("--log-requests", str(self.request_log), "--log-arrivals", str(self.arrivals)))
        return self.fake_port

    def start_worker(self) -> subprocess.Popen:
        """Start the worker (again, under the same node name after a kill)."""
        log = self.run_dir / f"worker-{len(self.worker_logs) + 1}.log"
        self.worker_logs.append(log)
        cmd = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", QUEUES, "-P", "prefork",
               f"--concurrency={CONCURRENCY}", "--loglevel=INFO", "-n", f"{self.node}@%h"]
        self.worker = self.procs.start(f"worker ({log.name})", cmd, self.env, log)
        return self.worker

    def start_beat(self) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel=INFO",
               "--schedule", str(self.run_dir / "celerybeat-schedule"),
               "--pidfile", str(self.run_dir / "celerybeat.pid")]
        self.beat = self.procs.start("beat", cmd, self.env, self.run_dir / "beat.log")
        return self.beat

    def wait_for_worker(self, app: Celery, timeout: float = READY_TIMEOUT) -> None:
        """Ping until the worker answers: then it is consuming, its pool forked."""
        deadline = time.monotonic() + timeout
        while True:
            if self.dead():
                raise RuntimeError(f"exited during startup: {', '.join(self.dead())}; see {self.run_dir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready after {timeout:.0f}s; see {self.run_dir}")
            for reply in app.control.ping(timeout=0.5) or []:
                if any(node.split("@", 1)[0] == self.node for node in reply):
                    return

    def worker_ready_logged(self) -> bool:
        """Whether the current worker has logged that it is ready (after a restart)."""
        try:
            return " ready." in self.worker_logs[-1].read_text(errors="replace")
        except OSError:
            return False

    def wait_for_beat_tick(self, timeout: float = 15) -> bool:
        """Wait until beat sends its next sweep (and a second for it to run), so that
        every run publishes at the same point of the sweeper's 10-second cycle and a
        sweep never lands in the first moments after publishing."""
        log = self.run_dir / "beat.log"
        before = log.read_text(errors="replace").count("Sending due task sweep-sends")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if log.read_text(errors="replace").count("Sending due task sweep-sends") > before:
                time.sleep(1.0)
                return True
            time.sleep(0.05)
        return False

    def dead(self) -> list[str]:
        """The current fake, worker and beat that are not running (a worker the
        scenario killed is replaced by the restarted one)."""
        current = {"fake provider": self.fake, "worker": self.worker, "beat": self.beat}
        return [f"{name} (exit {proc.returncode})" for name, proc in current.items()
                if proc is not None and proc.poll() is not None]

    def exited(self) -> list[tuple[str, int, str]]:
        """The worker or beat if it exited by itself: (name, exit code, its last
        CRITICAL or ERROR log line), forgotten here so that it is reported once."""
        found = []
        for name in ("worker", "beat"):
            proc = getattr(self, name)
            if proc is not None and proc.poll() is not None:
                log = self.worker_logs[-1] if name == "worker" else self.run_dir / "beat.log"
                found.append((name, proc.returncode, _last_error(log)))
                setattr(self, name, None)
        return found

    def pool_children(self) -> list[int]:
        import psutil

        if self.worker is None or self.worker.poll() is not None:
            return []
        try:
            return [child.pid for child in psutil.Process(self.worker.pid).children()]
        except psutil.Error:
            return []

    def pool_process_calling(self, ports: set[int]) -> int | None:
        """The pool process whose connection to the fake uses one of these local
        ports: the one waiting for that provider call. Connections are kept alive
        between calls, so the map is read again only for a port it does not know."""
        children = set(self.pool_children())
        for attempt in range(2):
            for port in ports:
                if self._port_owner.get(port) in children:
                    return self._port_owner[port]
            if attempt == 0:
                self._port_owner = self._read_port_owners(children)
        return None

    def _read_port_owners(self, children: set[int]) -> dict[int, int]:
        """Local port -> pool pid of each connection to the fake, from /proc/net/tcp and
        each child's descriptors (psutil takes about 8 ms a process; this 1 ms)."""
        fake = f"{self.fake_port:04X}"
        inodes = {}  # socket inode -> local port
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if remote.endswith(f":{fake}"):
                inodes[f"socket:[{inode}]"] = int(local.rsplit(":", 1)[1], 16)
        owners = {}
        for pid in children:
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target in inodes:
                    owners[inodes[target]] = pid
        return owners

    def kill_worker(self) -> list[int]:
        """SIGKILL the worker's main process and its pool processes together (their
        process group), as the OOM killer or a lost machine would. Returns their pids."""
        if self.worker is None:
            return []
        pids = [self.worker.pid, *self.pool_children()]
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(timeout=10)
        self.worker = None  # down on purpose until start_worker(); not "died"
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in pids[1:]) and time.monotonic() < deadline:
            time.sleep(0.01)
        return pids

    def redelivered_tasks(self) -> dict[str, int]:
        """Task name -> how many of its task ids the worker received more than once,
        from the worker logs: a task whose pool process died is handed out again (or,
        after a broker restart, queued again under a new id, which this does not count)."""
        seen: dict[tuple[str, str], int] = {}
        for log in self.worker_logs:
            try:
                text = log.read_text(errors="replace")
            except OSError:
                continue
            for name, task_id in re.findall(r"Task ([\w.]+)\[([0-9a-f-]+)\] received", text):
                seen[(name, task_id)] = seen.get((name, task_id), 0) + 1
        again: dict[str, int] = {}
        for (name, _), times in seen.items():
            if times > 1:
                again[name] = again.get(name, 0) + 1
        return again


def _last_error(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if "CRITICAL/" in line or "ERROR/" in line]
    return errors[-1].strip()[:200] if errors else ""


def io_bytes(pid: int) -> int:
    """Bytes the process has read and written so far, sockets and pipes included
    (/proc/PID/io). An idle pool process reads nothing, so the first to move after
    publishing is the one that took the first task."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return -1
    values = dict(line.split(": ") for line in text.splitlines() if ": " in line)
    return int(values.get("rchar", 0)) + int(values.get("wchar", 0))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers signal 0; its pool parent is gone, so read its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False
