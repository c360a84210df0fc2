"""manage.py export_subscribers FILE.csv: every confirmed subscriber, in the import format."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from alerts.models import RightsEvent
from alerts.rights.log import rights_record
from alerts.subscribers.importer import export_subscribers


class Command(BaseCommand):
    help = ("Export confirmed, unsuppressed subscribers with their consent evidence as CSV, "
            "in the format import_subscribers reads. The file is created afresh, readable by "
            "its owner only.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args, file: Path, **options) -> None:
        try:
            written = write_afresh(file)
        except OSError as error:
            raise CommandError(f"Cannot write {file}: {error.strerror}") from None
        rights_record(kind=RightsEvent.Kind.EXPORT, via=RightsEvent.Via.COMMAND, subscriber_ids=[None],
                      count=written)
        self.stdout.write(self.style.SUCCESS(f"Exported {written} subscribers to {file}."))


def write_afresh(file: Path) -> int:
    """Write the export to a new owner-only file beside `file`, then rename it into
    place. Personal data never passes through an existing file: opening one would keep
    its mode (a world-readable file stays world-readable) and follow a symlink planted
    at that path to wherever it points; a rename replaces the name itself."""
    if file.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(file))
    descriptor, temporary = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with open(descriptor, "w", encoding="utf-8", newline="") as out:  # mkstemp: mode 0600, O_EXCL
            written = export_subscribers(out)
        os.replace(temporary, file)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return written
