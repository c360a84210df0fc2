"""manage.py import_subscribers FILE.csv: bring a list from another provider."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from alerts.subscribers.importer import COLUMNS, CsvFormatError, LineResult, import_subscribers


class Command(BaseCommand):
    help = (
        "Import subscribers with their consent evidence from a UTF-8 CSV file whose header is "
        f"{','.join(COLUMNS[:4])}[,{','.join(COLUMNS[4:])}]. Prints one line per data line "
        "(imported, or skipped with the reason). Safe to re-run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--skipped-only", action="store_true",
                            help="Report only the lines that were skipped.")

    def handle(self, *args, file: Path, skipped_only: bool, **options) -> None:
        def report(result: LineResult) -> None:
            if not (skipped_only and result.outcome == "imported"):
                self.stdout.write(str(result))

        try:
            # errors="replace": a badly encoded line is reported as invalid, and the
            # rest of the file still imports.
            with file.open(encoding="utf-8-sig", errors="replace", newline="") as lines:
                summary = import_subscribers(lines, report=report, file_label=file.name)
        except OSError as error:
            raise CommandError(f"Cannot read {file}: {error.strerror}") from None
        except CsvFormatError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(self.style.SUCCESS(str(summary)))
