"""Optional (--py-spy): sample the workers with py-spy during the runs, then sum up
where the batch send spends its wall time, by function."""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.processes import Processes, signal_group

PROFILE_RATE = 200  # samples a second per process


def start_profilers(procs: Processes, workers: list[tuple[str, subprocess.Popen]],
                    run_dir: Path) -> list[tuple[subprocess.Popen, Path]]:
    """py-spy on each worker and its pool children, idle time included, so waits on
    PostgreSQL and the provider show up as well as CPU."""
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not exe:
        raise RuntimeError("--py-spy needs py-spy: .venv/bin/pip install py-spy")
    profilers = []
    for name, proc in workers:
        out = run_dir / f"py-spy-{name}.txt"
        cmd = [exe, "record", "--pid", str(proc.pid), "--subprocesses", "--idle", "--nonblocking",
               "--format", "raw", "--nolineno", "--rate", str(PROFILE_RATE), "--output", str(out)]
        profilers.append((procs.start(f"py-spy {name}", cmd, dict(os.environ), run_dir / "py-spy.log"), out))
    time.sleep(1)  # py-spy attaches asynchronously
    return profilers


def stop_profilers(profilers: list[tuple[subprocess.Popen, Path]]) -> None:
    for proc, _ in profilers:
        signal_group(proc, signal.SIGINT)  # py-spy writes its file on SIGINT
    for proc, _ in profilers:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


def summarise_profile(paths: list[Path], batches: int, anchor: str = "batch_send") -> dict:
    """Wall time inside `anchor` by function: inclusive (the function and all it calls)
    and self (the innermost frame), in ms per batch and in % of the anchor."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            start = next((i for i, f in enumerate(frames) if f.split(" (", 1)[0] == anchor), None)
            if start is None or not count.isdigit():
                continue
            n = int(count)
            total += n
            for frame in set(frames[start:]):
                inclusive[frame] += n
            own[frames[-1]] += n

    def table(counter: collections.Counter[str], top: int) -> list[dict]:
        return [{"function": f, "pct": round(100 * n / total, 1),
                 "ms_per_batch": round(n / PROFILE_RATE / max(batches, 1) * 1000, 2)}
                for f, n in counter.most_common(top)]

    return {"anchor": anchor, "samples": total, "batches": batches,
            "inclusive": table(inclusive, 40), "self": table(own, 25)}


def print_profile(profile: dict | None) -> None:
    if not profile or not profile["samples"]:
        return
    print(f"\nWhere {profile['anchor']} spends its wall time ({profile['samples']} samples,"
          f" {profile['batches']} batches; ms per batch, % of {profile['anchor']})")
    for kind in ("inclusive", "self"):
        print(f"  {kind}:")
        for row in profile[kind][:25 if kind == "inclusive" else 15]:
            print(f"    {row['ms_per_batch']:8.2f} ms {row['pct']:5.1f}%  {row['function'][:110]}")
