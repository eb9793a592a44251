"""Where a result came from, recorded beside it: the project's commit (``+dirty`` when code was uncommitted; results
files under bench/results do not count) and the command line, its paths relative to the working folder. Standard
library only: the benches import it too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!bench/results"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def portable(arg: str) -> str:
    """An absolute path as a result file records it: relative to the working folder (a reader elsewhere cannot
    follow this machine's absolute paths); anything else unchanged."""
    return os.path.relpath(arg) if os.path.isabs(arg) else arg


def command(program: str | None = None) -> str:
    """The command line that made a result, its paths portable: ``python SCRIPT ...``, or ``program ...`` for a
    command of the ``facesearch`` CLI (``program``: ``facesearch``)."""
    if program is None:
        return "python " + " ".join(portable(a) for a in sys.argv)
    return program + " " + " ".join(portable(a) for a in sys.argv[1:])
