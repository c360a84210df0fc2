#!/usr/bin/env python
"""How many messages a second the fan-out benchmark's SMTP sink (tests/fakes/smtp_sink.py)
takes by itself: no Celery, no database, only clients sending prebuilt messages.

    .venv/bin/python bench/smtp_sink.py                       # 3 processes x 4 connections
    .venv/bin/python bench/smtp_sink.py --messages 50000 --no-pipelining

The clients are what the fan-out's workers use (`alerts.sending.smtp.send_each`, with or
without PIPELINING), each sending the same 4.9 KB message (the size of a real alert) to
its own recipients. It prints messages a second between the first and the last, the
sink's CPU-seconds for them, and checks its record: every recipient once.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import smtplib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MESSAGE = (b"From: The Daily Courier <alerts@news.example.com>\r\nSubject: Breaking\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + (b"QUJD" * 19 + b"\r\n") * 60)


def _client(port: int, first: int, count: int, connections: int, pipelining: bool, ready, start) -> None:
    os.environ.update({"DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "1", "SECRET_KEY": "bench"})
    import django

    django.setup()
    from alerts.sending.smtp import send_each

    def sent(index: int) -> None:
        connection = smtplib.SMTP("127.0.0.1", port)
        if not pipelining:
            connection.ehlo()
            connection.esmtp_features.pop("pipelining", None)
        share = range(first + index, first + count, connections)
        for _ in send_each(connection, "alerts@news.example.com",
                           ((n, f"r{n}@example.com", MESSAGE) for n in share)):
            pass
        connection.quit()

    import threading

    threads = [threading.Thread(target=sent, args=(i,)) for i in range(connections)]
    ready.put(first)
    start.wait()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/smtp_sink.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=60000)
    parser.add_argument("--processes", type=int, default=3, help="client processes (the fan-out's pool: 3)")
    parser.add_argument("--connections", type=int, default=4, help="per process (EMAIL_CONNECTIONS: 4)")
    parser.add_argument("--no-pipelining", dest="pipelining", action="store_false")
    args = parser.parse_args(argv)

    import psutil

    from bench.processes import Processes, start_fake

    run_dir = ROOT / "bench" / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-smtp-sink"
    run_dir.mkdir(parents=True, exist_ok=True)
    procs = Processes()
    try:
        port, record, sink = start_fake(procs, "smtp", run_dir)
        ready, start = multiprocessing.Queue(), multiprocessing.Event()
        per = -(-args.messages // args.processes)
        clients = [multiprocessing.Process(target=_client, args=(port, i * per, min(per, args.messages - i * per),
                                                                args.connections, args.pipelining, ready, start))
                   for i in range(args.processes)]
        for client in clients:
            client.start()
        for _ in clients:
            ready.get(timeout=60)  # Django set up in every client
        sink_cpu = psutil.Process(sink.pid).cpu_times()
        t0 = time.monotonic()
        start.set()
        for client in clients:
            client.join()
        elapsed = time.monotonic() - t0
        after = psutil.Process(sink.pid).cpu_times()
        cpu = after.user + after.system - sink_cpu.user - sink_cpu.system
        counts = collections.Counter(record.read_text().split())
    finally:
        procs.stop_all()
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    print(f"{args.messages:,} messages, {args.processes} processes x {args.connections} connections, "
          f"pipelining {'on' if args.pipelining else 'off'}")
    print(f"  {args.messages / elapsed:,.0f} messages a second ({elapsed:.2f} s)")
    print(f"  sink CPU {cpu:.2f} s ({1e6 * cpu / args.messages:.0f} us a message)")
    print(f"  recorded {sum(counts.values()):,}, distinct {len(counts):,}, duplicates {duplicates}")
    return 0 if len(counts) == args.messages and not duplicates else 1


if __name__ == "__main__":
    sys.exit(main())
