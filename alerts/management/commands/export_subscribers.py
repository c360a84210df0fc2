"""manage.py export_subscribers FILE.csv: every confirmed subscriber, in the import format."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from alerts.subscribers.importer import export_subscribers


class Command(BaseCommand):
    help = ("Export confirmed, unsuppressed subscribers with their consent evidence as CSV, "
            "in the format import_subscribers reads. The file is readable by its owner only.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args, file: Path, **options) -> None:
        try:
            # Personal data: create the file owner-only before writing anything to it.
            descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(descriptor, "w", encoding="utf-8", newline="") as out:
                written = export_subscribers(out)
        except OSError as error:
            raise CommandError(f"Cannot write {file}: {error.strerror}") from None
        self.stdout.write(self.style.SUCCESS(f"Exported {written} subscribers to {file}."))
