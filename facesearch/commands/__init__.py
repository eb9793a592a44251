"""The command line's commands, one module each (``facesearch <command>``: :mod:`facesearch.cli` dispatches).
Those that read or write faces talk to a :class:`facesearch.client.Client` (:func:`connect`): a server with
``--url``, else the gallery in this process, so each is written once."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from facesearch.client import FaceSearch

if TYPE_CHECKING:
    from facesearch.client import Client


def client_options(p: argparse.ArgumentParser) -> None:
    """The options that say where the faces are: a server, or the gallery in this process."""
    p.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000 (default: in-process)")
    p.add_argument("--api-key")
    p.add_argument("--collection", help="work in this collection (default: default)")
    p.add_argument("--data-dir", type=Path, help="in-process: the gallery's folder (default: FACESEARCH_DATA_DIR)")


def connect(a: argparse.Namespace, gallery: Literal["existing", "create"] | None = "existing") -> Client:
    """The server of ``--url``, else the gallery the service would open, in this process (``gallery``: see
    :class:`facesearch.local.LocalFaceSearch`; a missing gallery or collection raises ``GalleryError``)."""
    if a.url:
        return FaceSearch(a.url, a.api_key, collection=a.collection)
    from facesearch.local import LocalFaceSearch  # the pipeline and the store: only in process
    from facesearch.settings import Settings

    settings = Settings(**({"data_dir": a.data_dir} if a.data_dir else {}))
    return LocalFaceSearch(settings, collection=a.collection, gallery=gallery)


def missing_files(command: str, paths: Iterable[Path | None]) -> bool:
    """Name the files that do not exist, in one line on stderr; True when there are any (the command exits 2)."""
    missing = [str(p) for p in paths if p is not None and not p.is_file()]
    if missing:
        print(f"facesearch {command}: no such file: {', '.join(missing)}", file=sys.stderr)
    return bool(missing)
