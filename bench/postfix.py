"""Postfix's C test tools, smtp-sink (a fast no-limit SMTP server) and smtp-source (a load
generator), unpacked from Debian's postfix package into var/bench/postfix on first use,
without installing an MTA. No Django here: the tests use it too."""

import os
import subprocess
from pathlib import Path

POSTFIX_DIR = Path(__file__).resolve().parent.parent / "var" / "bench" / "postfix"


def tool(name: str) -> tuple[Path, dict]:
    """(path of `name` — "smtp-sink" or "smtp-source" —, the environment it runs in)."""
    binary = POSTFIX_DIR / "usr" / "sbin" / name
    if not binary.exists():
        download = POSTFIX_DIR.parent / "download"
        download.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "postfix"], cwd=download, check=True, capture_output=True)
        package = next(download.glob("postfix_*.deb"))
        subprocess.run(["dpkg", "-x", str(package), str(POSTFIX_DIR)], check=True)
    return binary, os.environ | {"LD_LIBRARY_PATH": str(POSTFIX_DIR / "usr" / "lib" / "postfix")}
