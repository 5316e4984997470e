import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from campaigns.lists.importing import ImportFailed, ImportResult, check_header, import_csv_file, size_error
from campaigns.models import MailingList


class Command(BaseCommand):
    help = (
        "Import subscribers from a CSV file into a list (created if missing). The header row needs an "
        "'email' column; 'name' is optional and other columns become attributes. Invalid rows are "
        "listed with their line numbers; the valid ones import. Importing a file again changes nothing. "
        "A file larger than IMPORT_MAX_BYTES is refused (exit status 2)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--list", required=True, metavar="NAME", help="The list to import into.")
        parser.add_argument("file", type=Path, metavar="FILE.csv")

    def handle(self, *args, **options):
        path: Path = options["file"]
        self.verbosity = options["verbosity"]
        list_name = options["list"].strip()
        max_length = MailingList._meta.get_field("name").max_length
        if not list_name or len(list_name) > max_length:
            raise CommandError(f"--list must be a name of 1 to {max_length} characters")
        try:
            binary_file = path.open("rb")
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        with binary_file:
            if too_large := size_error(os.fstat(binary_file.fileno()).st_size):
                raise CommandError(f"{path} is too large: {too_large}", returncode=2)
            try:
                # Before creating the list, so a file that cannot be imported leaves nothing behind.
                check_header(binary_file)
                mailing_list, created = MailingList.objects.get_or_create(name=list_name)
                if created:
                    self.stdout.write(f"Created the list '{list_name}'.")
                result = import_csv_file(binary_file, mailing_list, progress=self._progress)
            except ImportFailed as exc:
                raise CommandError(f"{path}: {exc}") from None
        self._report(path, mailing_list, result)

    def _progress(self, result: ImportResult) -> None:
        if self.verbosity >= 2:
            self.stderr.write(f"{result.rows_read} rows read ({result.bytes_read} bytes)")

    def _report(self, path: Path, mailing_list: MailingList, result: ImportResult) -> None:
        self.stdout.write(
            f"{path}: {result.rows_read} rows into '{mailing_list.name}': "
            f"{result.created} new, {result.merged} merged, {result.invalid} invalid."
        )
        for error in result.errors:
            self.stdout.write(f"line {error['line']}: {error['reason']}")
        unlisted = result.invalid - len(result.errors)
        if unlisted:
            self.stdout.write(f"... and {unlisted} more invalid rows.")
