"""Throwaway servers of the chaos benchmark's own, for the scenarios that restart one:
a Redis broker without persistence, and a PostgreSQL cluster made with initdb. Each
listens on a spare port of 127.0.0.1, keeps its files in a temporary directory, and is
stopped and removed afterwards. The shared servers (5432, 6379) are never touched.

A directory names the benchmark process that made it (`owner.pid`), so that a later run
can remove what a killed one left behind without touching a concurrent run's server.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.processes import Processes

HOST = "127.0.0.1"
REDIS_PORTS = range(6390, 6400)
PG_PORTS = range(5440, 5450)
PREFIX = "stoppress-chaos-"
READY_TIMEOUT = 60  # seconds for a server to answer after starting


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def spare_port(ports: range, first: int | None = None) -> int:
    """The first free port of `ports` (from `first`, if given)."""
    candidates = [first] if first else []
    candidates += [port for port in ports if port != first]
    for port in candidates:
        if port_free(port):
            return port
    raise RuntimeError(f"no free port among {candidates}")


def _owned_temp_dir(kind: str) -> Path:
    remove_stale(kind)
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-"))
    (path / "owner.pid").write_text(str(os.getpid()))
    return path


def remove_stale(kind: str) -> None:
    """Remove directories (and stop the PostgreSQL servers in them) that an earlier
    benchmark left behind when it was killed; its pid is no longer alive."""
    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}{kind}-*"):
        owner = path / "owner.pid"
        try:
            pid = int(owner.read_text())
            os.kill(pid, 0)
            continue  # a run still going: not ours to remove
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            if owner.exists():
                continue
        if kind == "pg" and (path / "data" / "postmaster.pid").exists():
            PrivatePostgres.pg_ctl_in(path, "stop", "-m", "immediate", "-w", check=False)
        shutil.rmtree(path, ignore_errors=True)
        print(f"  removed {path}, left behind by an earlier run")


class PrivateRedis:
    """`redis-server --save '' --appendonly no` on a spare port: a broker whose
    restart loses every queued and unacknowledged task, as a real one without
    persistence does."""

    def __init__(self, procs: Processes, run_dir: Path, first_port: int | None = None) -> None:
        self.procs = procs
        self.run_dir = run_dir
        self.port = spare_port(REDIS_PORTS, first_port)
        self.dir = _owned_temp_dir("redis")
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    def start(self) -> float:
        """Start it (again, on the same port); return when it answered PING."""
        self.starts += 1
        cmd = ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
               "--dir", str(self.dir), "--daemonize", "no", "--maxmemory-policy", "noeviction"]
        self.proc = self.procs.start(f"redis :{self.port}", cmd, dict(os.environ),
                                     self.run_dir / f"redis-{self.starts}.log")
        return self.wait_ready()

    def wait_ready(self) -> float:
        import redis

        client = redis.Redis(host=HOST, port=self.port, socket_timeout=1)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                client.ping()
                return time.time()
            except redis.RedisError:
                if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                    raise RuntimeError(f"private redis-server on :{self.port} did not start;"
                                       f" see {self.run_dir}") from None
                time.sleep(0.02)

    def kill(self) -> int:
        """SIGKILL it, as a crash would; returns its pid."""
        if self.proc is None:
            raise RuntimeError("the private redis-server was never started")
        pid = self.proc.pid
        os.killpg(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        return pid

    def remove(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's binaries (Debian's layout)."""
    found = [path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    if not found:
        found = [Path(p).parent for p in [shutil.which("initdb")] if p]
    if not found:
        raise RuntimeError("initdb not found (under /usr/lib/postgresql/*/bin or on PATH)")
    return max(found, key=lambda path: [int(n) for n in re.findall(r"\d+", str(path))] or [0])


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb, trust authentication) on a spare port,
    run with pg_ctl as the `postgres` OS user when we are root (initdb refuses root)."""

    def __init__(self, run_dir: Path, first_port: int | None = None) -> None:
        self.run_dir = run_dir
        self.port = spare_port(PG_PORTS, first_port)
        self.dir = _owned_temp_dir("pg")
        self.data = self.dir / "data"
        _chown_to_postgres(self.dir)
        self.initialised = False

    @property
    def server(self) -> str:
        return f"postgres://postgres@{HOST}:{self.port}"

    @staticmethod
    def as_postgres(cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    @classmethod
    def pg_ctl_in(cls, base: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = cls.as_postgres([str(postgres_bin() / "pg_ctl"), "-D", str(base / "data"), *args])
        result = subprocess.run(cmd, cwd=base, capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.pg_ctl_in(self.dir, *args, check=check)

    def init(self) -> None:
        cmd = self.as_postgres([str(postgres_bin() / "initdb"), "-D", str(self.data), "-U", "postgres",
                                "-A", "trust", "-E", "UTF8", "--no-sync"])
        result = subprocess.run(cmd, cwd=self.dir, capture_output=True, text=True, timeout=120, check=False)
        (self.run_dir / "initdb.log").write_text(result.stdout + result.stderr)
        if result.returncode:
            raise RuntimeError(f"initdb failed; see {self.run_dir / 'initdb.log'}")
        self.initialised = True

    def start(self) -> float:
        """pg_ctl start, waiting until it accepts connections; returns that moment."""
        if not self.initialised:
            self.init()
        options = f"-p {self.port} -k {self.dir} -c listen_addresses={HOST}"
        self.pg_ctl("-l", str(self.dir / "server.log"), "-o", options, "-w", "-t", str(READY_TIMEOUT), "start")
        return time.time()

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "-w", "-t", str(READY_TIMEOUT), "stop")

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def remove(self) -> None:
        if self.initialised and self.postmaster_pid():
            self.pg_ctl("-m", "immediate", "-w", "stop", check=False)
        with contextlib.suppress(OSError):
            shutil.copy(self.dir / "server.log", self.run_dir / "postgres-server.log")
        shutil.rmtree(self.dir, ignore_errors=True)


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam("postgres")
    os.chown(path, user.pw_uid, user.pw_gid)
    os.chmod(path, 0o700)
