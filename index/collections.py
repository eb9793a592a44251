"""Collections: galleries of their own in one deployment, so that apps (or an app's customers) sharing a service never
see each other's people.

The collection ``default`` is the deployment's gallery (the data folder's ``gallery.db``, or PostgreSQL's own search
path): every route under ``/v1/...`` is its, as before collections existed. Any other collection is a whole
:class:`~index.gallery.Gallery` of its own, kept where the default one is, under a storage tag drawn when it is made:
``collections/<tag>/`` under the data folder (SQLite and FAISS snapshots), the PostgreSQL schema ``fs_<tag>``, Milvus
collections named ``<tag>_...``. Identities, photos, clusters, the audit and the search threshold (it follows the
gallery's size) are therefore per collection by construction, and deleting a collection drops everything it held:
its schema or database file, its vector collections or snapshots, each file overwritten with zeros before it is
unlinked.

The names and tags live in the default gallery's ``collections`` table; every process reads them again at most once
a second (:data:`REFRESH_S`): a collection another replica made opens here on first use, one it deleted closes here
and leaves no files in this replica's folder.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from index.config import GalleryConfig, open_gallery, open_store
from index.errors import Conflict, InvalidKey, NotFound
from index.gallery import Gallery

log = logging.getLogger(__name__)
DEFAULT = "default"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
REFRESH_S = 1.0  # a collection made or deleted by another replica is seen here within this


@dataclass(frozen=True)
class CollectionRecord:
    name: str
    created_at: float | None  # None: the default collection, as old as the deployment


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidKey("a collection name is 1-63 lowercase letters, digits, '-' or '_', starting with a letter "
                         "or digit")
    return name


class Collections:
    """The deployment's collections: ``default`` (open from the start, ``default`` gallery) and those in the table,
    opened on first use with ``config`` but for their folder and tag. Safe to use from any thread."""

    def __init__(self, default: Gallery, config: GalleryConfig) -> None:
        self.default, self.config = default, config
        self.root = Path(config.folder) / "collections"
        self._lock = threading.RLock()
        self._open: dict[str, tuple[str, Gallery]] = {}  # name -> (tag, gallery)
        self._known: dict[str, tuple[str, float]] = {}  # name -> (tag, created_at), as last read
        self._read_at = -float("inf")
        self.refresh(force=True)
        self._wipe_strays()

    # --- reads --------------------------------------------------------------------------------------------
    def refresh(self, *, force: bool = False) -> None:
        """Read the table again (at most every REFRESH_S unless ``force``); close what was deleted elsewhere."""
        with self._lock:
            if not force and time.monotonic() - self._read_at < REFRESH_S:
                return
            with self.default.store.read() as c:
                rows = c.execute("SELECT name, tag, created_at FROM collections").fetchall()
            self._known = {str(n): (str(t), float(at)) for n, t, at in rows}
            self._read_at = time.monotonic()
            for name, (tag, gallery) in list(self._open.items()):
                if self._known.get(name, ("",))[0] != tag:  # deleted (or deleted and made again) by another replica
                    del self._open[name]
                    _close_quietly(gallery)
                    wipe(self.root / tag)

    def records(self) -> list[CollectionRecord]:
        """``default`` first, then the others by name."""
        self.refresh()
        others = [CollectionRecord(n, at) for n, (_, at) in sorted(self._known.items())]
        return [CollectionRecord(DEFAULT, None), *others]

    def record(self, name: str) -> CollectionRecord:
        if name == DEFAULT:
            return CollectionRecord(DEFAULT, None)
        self.refresh()
        if name not in self._known:
            raise NotFound(f"collection {name!r} not found")
        return CollectionRecord(name, self._known[name][1])

    def get(self, name: str) -> Gallery:
        """The collection's gallery, opened on first use. NotFound if there is no such collection."""
        if name == DEFAULT:
            return self.default
        self.refresh()
        with self._lock:
            if name not in self._known:
                raise NotFound(f"collection {name!r} not found")
            tag = self._known[name][0]
            opened = self._open.get(name)
            if opened is None:
                opened = (tag, open_gallery(self._config(tag)))
                self._open[name] = opened
            return opened[1]

    def galleries(self) -> list[tuple[str, Gallery]]:
        """Every open collection's gallery, ``default`` first (for upkeep: snapshots, retention)."""
        with self._lock:
            return [(DEFAULT, self.default)] + [(n, g) for n, (_, g) in sorted(self._open.items())]

    def open_all(self) -> list[tuple[str, Gallery]]:
        """Open every collection (at start-up: each is checked, and re-embedded if it must be, before serving)."""
        self.refresh(force=True)
        for name in list(self._known):
            self.get(name)
        return self.galleries()

    # --- writes -------------------------------------------------------------------------------------------
    def create(self, name: object, *, actor: str | None = None) -> CollectionRecord:
        """A new, empty collection (Conflict if the name is taken)."""
        name = validate_name(name)
        if name == DEFAULT:
            raise Conflict(f"collection {DEFAULT!r} already exists")
        tag, now = "c" + secrets.token_hex(8), time.time()
        with self._lock:
            with self.default.locks.mutex, self.default.store.transaction() as c:
                if c.execute("SELECT 1 FROM collections WHERE name = ?", (name,)).fetchone():
                    raise Conflict(f"collection {name!r} already exists")
                c.execute("INSERT INTO collections(name, tag, created_at) VALUES (?, ?, ?)", (name, tag, now))
                self.default.store.audit(c, "create_collection", actor=actor, collection=name)
            try:
                self._open[name] = (tag, open_gallery(self._config(tag)))
            except BaseException:
                with self.default.locks.mutex, self.default.store.transaction() as c:
                    c.execute("DELETE FROM collections WHERE name = ? AND tag = ?", (name, tag))
                wipe(self.root / tag)
                raise
            self.refresh(force=True)
        return CollectionRecord(name, now)

    def delete(self, name: str, *, actor: str | None = None) -> int:
        """Delete a collection and everything it holds; returns how many faces it held. When this returns, no file
        under the data folder holds any of its faces (its files were overwritten with zeros, then unlinked), its
        PostgreSQL schema and Milvus collections are dropped; other replicas close it within REFRESH_S."""
        if name == DEFAULT:
            raise Conflict(f"the {DEFAULT!r} collection cannot be deleted (delete its identities and photos)")
        with self._lock:
            self.refresh(force=True)
            if name not in self._known:
                raise NotFound(f"collection {name!r} not found")
            gallery = self.get(name)
            faces = gallery.count()[1]
            tag = self._open.pop(name)[0]
            with self.default.locks.mutex, self.default.store.transaction() as c:
                c.execute("DELETE FROM collections WHERE name = ?", (name,))
                self.default.store.audit(c, "delete_collection", actor=actor, collection=name)
            self._known.pop(name, None)
            try:
                gallery.destroy()
            finally:
                wipe(self.root / tag)
        return faces

    def close(self) -> None:
        """Close every collection but ``default`` (its owner closes it)."""
        with self._lock:
            for _, gallery in self._open.values():
                _close_quietly(gallery)
            self._open.clear()

    # --- where a collection lives -------------------------------------------------------------------------
    def _config(self, tag: str) -> GalleryConfig:
        return collection_config(self.config, tag)

    def _wipe_strays(self) -> None:
        """Folders of collections deleted while this process was away (another replica deleted them) go."""
        if not self.root.is_dir():
            return
        tags = {tag for tag, _ in self._known.values()}
        for p in self.root.iterdir():
            if p.name not in tags:
                wipe(p)


def collection_config(config: GalleryConfig, tag: str) -> GalleryConfig:
    """Where the collection of storage tag ``tag`` lives, given the default gallery's configuration."""
    return dataclasses.replace(config, folder=Path(config.folder) / "collections" / tag, collection=tag)


def open_collection(config: GalleryConfig, name: str) -> Gallery:
    """One collection's gallery on its own (a command's): its tag read from the default gallery's table.
    NotFound if there is no such collection."""
    if name == DEFAULT:
        return open_gallery(config)
    store = open_store(config.folder, config.database_url, 2)
    try:
        with store.read() as c:
            row = c.execute("SELECT tag FROM collections WHERE name = ?", (name,)).fetchone()
    finally:
        store.close()
    if row is None:
        raise NotFound(f"collection {name!r} not found")
    return open_gallery(collection_config(config, str(row[0])))


def wipe(path: Path) -> None:
    """Overwrite every file under ``path`` with zeros (synced), then remove the tree: what a collection kept on this
    machine leaves no bytes in any file."""
    if not path.exists():
        return
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    for f in files:
        try:
            with open(f, "r+b") as out:
                size, block = os.fstat(out.fileno()).st_size, b"\0" * (1 << 20)
                for start in range(0, size, len(block)):
                    out.write(block[: min(len(block), size - start)])
                out.flush()
                os.fsync(out.fileno())
        except OSError as e:  # removed anyway
            log.warning("could not overwrite %s before removing it: %s", f, e)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _close_quietly(gallery: Gallery) -> None:
    try:
        gallery.close()
    except Exception as e:  # a collection another replica dropped: its tables are gone
        log.warning("closing a deleted collection's gallery: %s", e)
