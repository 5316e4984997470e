"""Rows per second and peak memory of the CSV importer, for two file sizes.

    python bench/import.py [--rows 100000] [--small 10000]

Each size runs in a fresh process on a fresh SQLite database in a temporary directory: it
writes a CSV file (name, two attribute columns, and one invalid row in every thousand),
imports it into an empty list with `campaigns.lists.importing.import_csv_file`, imports it again
(every row then merges), and reports rows per second and the process's peak RSS. The
importer streams, so the peak RSS of the large file should be about that of the small one.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_csv(path: Path, rows: int) -> int:
    invalid = 0
    with path.open("w", newline="") as out:
        out.write("email,name,city,plan\n")
        for i in range(rows):
            if i % 1000 == 999:
                out.write(f"broken-{i}@,Broken {i},Oslo,free\n")
                invalid += 1
            else:
                out.write(f"Reader.{i}@Example.com,Reader {i},City {i % 50},{'pro' if i % 3 else 'free'}\n")
    return invalid


def measure(rows: int) -> dict:
    """Run in a child process: one size, a fresh database, the figures as a dict."""
    work = Path(tempfile.mkdtemp(prefix="relaydeck-bench-import-"))
    os.environ["RELAYDECK_VAR_DIR"] = str(work)
    for name in ("DATABASE_URL", "SQLITE_PATH"):  # a fresh SQLite database in `work`
        os.environ.pop(name, None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    os.environ["DEBUG"] = "0"  # DEBUG keeps a log of recent queries; production does not
    os.environ.setdefault("SECRET_KEY", "bench")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    from campaigns.lists.importing import import_csv_file
    from campaigns.models import MailingList, Subscriber

    call_command("migrate", verbosity=0)
    path = work / "subscribers.csv"
    invalid = write_csv(path, rows)
    mailing_list = MailingList.objects.create(name="Bench")
    rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    figures = {"rows": rows, "file_mb": path.stat().st_size / 1e6}
    for run in ("first", "again"):
        started = time.perf_counter()
        with path.open("rb") as binary_file:
            result = import_csv_file(binary_file, mailing_list)
        elapsed = time.perf_counter() - started
        assert result.invalid == invalid and result.created + result.merged == rows - invalid, result
        figures[f"{run}_rows_per_s"] = rows / elapsed
        figures[f"{run}_s"] = elapsed
    assert Subscriber.objects.count() == rows - invalid == mailing_list.subscribers.count()
    figures["rss_before_import_mb"] = rss_before_kb / 1024
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return

    results = []
    for rows in (args.small, args.rows):
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(rows)], capture_output=True, text=True, check=False
        )
        if child.returncode:
            sys.exit(f"{rows} rows: the import failed\n{child.stderr}")
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))

    print("SQLite, a fresh database per size; 1 row in 1,000 invalid; then the same file again (all merges)")
    print(f"{'rows':>8} {'file':>8} {'new rows/s':>11} {'re-import rows/s':>17} {'RSS before':>11} {'peak RSS':>9}")
    for r in results:
        print(
            f"{r['rows']:>8} {r['file_mb']:>6.1f}MB {r['first_rows_per_s']:>11.0f} {r['again_rows_per_s']:>17.0f}"
            f" {r['rss_before_import_mb']:>9.1f}MB {r['peak_rss_mb']:>7.1f}MB"
        )
    small, large = results
    growth = large["peak_rss_mb"] - small["peak_rss_mb"]
    print(f"\n{large['rows'] / small['rows']:.0f}x the rows: peak RSS {growth:+.1f} MB")


if __name__ == "__main__":
    main()
