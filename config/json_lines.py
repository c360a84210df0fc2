"""`python -m config.json_lines NAME`: copy stdin to stdout, one JSON object per line.

Lines that are JSON objects already (every log record, with LOG_FORMAT=json) pass
unchanged; anything else a process prints outside logging (Celery's banner and its
"Warm shutdown" notice, written straight to the file descriptor; runserver's start-up
text) is wrapped as {"time", "level": "INFO", "logger": NAME, "message"}. `make run`
pipes each of its processes through this when LOG_FORMAT=json, so its terminal, or a
log collector reading it, only ever sees JSON lines.
"""

from __future__ import annotations

import json
import signal
import sys
from datetime import UTC, datetime


def as_json_line(line: str, name: str) -> str | None:
    """The line as a JSON object's text, or None for a blank line."""
    text = line.rstrip("\r\n")
    if not text.strip():
        return None
    if text.startswith("{"):
        try:
            if isinstance(json.loads(text), dict):
                return text
        except ValueError:
            pass
    return json.dumps({"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "level": "INFO",
                       "logger": name, "message": text})


def main(argv: list[str]) -> int:
    # Ctrl-C reaches the whole process group: this one stays to pass on the last lines
    # of the processes shutting down, and ends when they have all closed its input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    name = argv[1] if len(argv) > 1 else "stdout"
    for line in sys.stdin:
        out = as_json_line(line, name)
        if out is not None:
            sys.stdout.write(out + "\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
