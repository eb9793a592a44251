"""The queries for photos and clusters of unnamed faces, written once for SQLite and PostgreSQL (``?`` marks a
parameter), run on a connection from :class:`index.store.Store` (in the caller's transaction for writes).

A photo's faces are rows of ``faces`` with ``photo_id`` set; a face nobody has named has no ``identity_id``;
``cluster_id`` groups unnamed faces (the id of the cluster's first face) until someone names the cluster.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from index.records import NewPhoto
from index.store import Conn, Store

PHOTO_COLS = ("p.key, p.album, p.metadata, p.width, p.height, p.created_at, "
              "(SELECT COUNT(*) FROM faces f WHERE f.photo_id = p.id)")


def _marks(n: int) -> str:
    return ",".join("?" * n)


def insert_photo(store: Store, c: Conn, photo: NewPhoto) -> int | None:
    """The new photo's row id, or None when a photo with this key exists."""
    if photo_id(c, photo.key) is not None:
        return None
    return store.insert_returning(
        c, "INSERT INTO photos(key, album, metadata, width, height, created_at) VALUES (?, ?, ?, ?, ?, ?) "
           "RETURNING id",
        [(photo.key, photo.album, json.dumps(photo.metadata), photo.width, photo.height, time.time())])[0]


def photo_id(c: Conn, key: str) -> int | None:
    row = c.execute("SELECT id FROM photos WHERE key = ?", (key,)).fetchone()
    return None if row is None else int(row[0])


def get_photo(c: Conn, key: str) -> tuple[Any, ...] | None:
    row = c.execute(f"SELECT {PHOTO_COLS} FROM photos p WHERE p.key = ?", (key,)).fetchone()
    return None if row is None else tuple(row)


def list_photos(c: Conn, album: str | None, limit: int, offset: int) -> tuple[list[tuple[Any, ...]], int]:
    where, args = ("WHERE p.album = ?", [album]) if album is not None else ("", [])
    total = int(c.execute(f"SELECT COUNT(*) FROM photos p {where}", args).fetchone()[0])
    rows = c.execute(f"SELECT {PHOTO_COLS} FROM photos p {where} ORDER BY p.id LIMIT ? OFFSET ?",
                     [*args, limit, offset]).fetchall()
    return [tuple(r) for r in rows], total


def photo_face_rows(c: Conn, key: str) -> list[tuple[Any, ...]]:
    """The faces of a photo, by id, as :func:`index.records.face_record` reads them."""
    return [tuple(r) for r in c.execute(f"SELECT {Store.FACE_COLS} FROM {Store.FACES} WHERE p.key = ? ORDER BY f.id",
                                        (key,))]


def photo_face_ids(c: Conn, pid: int) -> list[int]:
    return [int(r[0]) for r in c.execute("SELECT id FROM faces WHERE photo_id = ? ORDER BY id", (pid,))]


def album_photo_ids(c: Conn, album: str) -> list[int]:
    return [int(r[0]) for r in c.execute("SELECT id FROM photos WHERE album = ? ORDER BY id", (album,))]


def faces_of_photos(c: Conn, pids: Sequence[int], limit: int | None = None) -> list[int]:
    """The faces of these photos (at most ``limit`` of them)."""
    out: list[int] = []
    for i in range(0, len(pids), 500):
        if limit is not None and len(out) >= limit:
            break
        chunk = list(pids[i : i + 500])
        more = "" if limit is None else f" LIMIT {int(limit) - len(out)}"
        out += [int(r[0]) for r in c.execute(f"SELECT id FROM faces WHERE photo_id IN ({_marks(len(chunk))}){more}",
                                             chunk)]
    return out


def delete_photo_rows(c: Conn, pids: Sequence[int]) -> None:
    c.executemany("DELETE FROM photos WHERE id = ?", [(p,) for p in pids])


class PhotoFace(NamedTuple):
    photo: str
    album: str
    box: list[float] | None


def photo_faces(c: Conn, face_ids: Sequence[int], album: str | None) -> dict[int, PhotoFace]:
    """face id -> where it was found, for those of ``face_ids`` found in a photo (of ``album``)."""
    out: dict[int, PhotoFace] = {}
    extra, args = (" AND p.album = ?", [album]) if album is not None else ("", [])
    for i in range(0, len(face_ids), 500):
        chunk = list(face_ids[i : i + 500])
        out.update((int(r[0]), PhotoFace(str(r[1]), str(r[2]), json.loads(r[3]) if r[3] else None)) for r in c.execute(
            f"SELECT f.id, p.key, p.album, f.box FROM faces f JOIN photos p ON p.id = f.photo_id "
            f"WHERE f.id IN ({_marks(len(chunk))}){extra}", [*chunk, *args]))
    return out


def embeddings(c: Conn, face_ids: Sequence[int]) -> tuple[list[int], np.ndarray]:
    """(the ids of those faces that exist, in the order given; their embeddings, float32 (n, D))."""
    got: dict[int, bytes] = {}
    for i in range(0, len(face_ids), 500):
        chunk = list(face_ids[i : i + 500])
        got.update((int(f), bytes(e)) for f, e in c.execute(
            f"SELECT id, embedding FROM faces WHERE id IN ({_marks(len(chunk))})", chunk))
    ids = [f for f in face_ids if f in got]
    return ids, np.stack([np.frombuffer(got[f], dtype=np.float32) for f in ids]) if ids else np.zeros((0, 0),
                                                                                                    np.float32)


def count_photo_faces(c: Conn) -> int:
    return int(c.execute("SELECT COUNT(*) FROM faces WHERE photo_id IS NOT NULL").fetchone()[0])


def count_photos(c: Conn) -> int:
    return int(c.execute("SELECT COUNT(*) FROM photos").fetchone()[0])


def count_unnamed(c: Conn) -> int:
    return int(c.execute("SELECT COUNT(*) FROM faces WHERE identity_id IS NULL").fetchone()[0])


def unnamed_before(c: Conn, before: float, limit: int | None) -> list[int]:
    """Unnamed faces indexed before ``before`` (a Unix time), by id."""
    sql = "SELECT id FROM faces WHERE identity_id IS NULL AND created_at < ? ORDER BY id"
    return [int(r[0]) for r in c.execute(sql + (" LIMIT ?" if limit else ""), (before, limit) if limit else (before,))]


# --- clusters ------------------------------------------------------------------------------------------
def unnamed_clusters(c: Conn, face_ids: Sequence[int]) -> dict[int, int]:
    """face id -> cluster id, for those of ``face_ids`` that are unnamed and in a cluster."""
    out: dict[int, int] = {}
    for i in range(0, len(face_ids), 500):
        chunk = list(face_ids[i : i + 500])
        out.update((int(f), int(k)) for f, k in c.execute(
            f"SELECT id, cluster_id FROM faces WHERE id IN ({_marks(len(chunk))}) AND identity_id IS NULL "
            "AND cluster_id IS NOT NULL", chunk))
    return out


def set_clusters(c: Conn, assignment: Sequence[tuple[int, int]]) -> None:
    """(face id, cluster id) pairs; faces that have an identity are left out of clusters."""
    c.executemany("UPDATE faces SET cluster_id = ? WHERE id = ? AND identity_id IS NULL",
                  [(k, f) for f, k in assignment])


def unnamed_embeddings(c: Conn, album: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(face ids int64 (n,), embeddings float32 (n, D)) of every unnamed face (of ``album``'s photos), by id."""
    if album is None:
        rows = c.execute("SELECT id, embedding FROM faces WHERE identity_id IS NULL ORDER BY id")
    else:
        rows = c.execute("SELECT f.id, f.embedding FROM faces f JOIN photos p ON p.id = f.photo_id "
                         "WHERE f.identity_id IS NULL AND p.album = ? ORDER BY f.id", (album,))
    got = rows.fetchall()
    return (np.array([int(r[0]) for r in got], dtype=np.int64),
            np.frombuffer(b"".join(bytes(r[1]) for r in got), dtype=np.float32).reshape(len(got), -1))


def list_clusters(c: Conn, limit: int, offset: int, min_faces: int) -> tuple[list[tuple[int, int]], int]:
    """(cluster id, faces) of clusters of unnamed faces, largest first; and how many there are. One grouping: the
    total is a window over the groups (counted apart only for a page past the end)."""
    group = "FROM faces WHERE identity_id IS NULL AND cluster_id IS NOT NULL GROUP BY cluster_id HAVING COUNT(*) >= ?"
    rows = c.execute(f"SELECT cluster_id, COUNT(*), COUNT(*) OVER () {group} ORDER BY COUNT(*) DESC, cluster_id "
                     "LIMIT ? OFFSET ?", (min_faces, limit, offset)).fetchall()
    if rows:
        total = int(rows[0][2])
    else:
        total = int(c.execute(f"SELECT COUNT(*) FROM (SELECT cluster_id {group}) t", (min_faces,)).fetchone()[0])
    return [(int(r[0]), int(r[1])) for r in rows], total


def cluster_size(c: Conn, cluster: int) -> int:
    return int(c.execute("SELECT COUNT(*) FROM faces WHERE cluster_id = ? AND identity_id IS NULL",
                         (cluster,)).fetchone()[0])


def cluster_face_ids(c: Conn, cluster: int, limit: int | None = None, offset: int = 0) -> list[int]:
    """The unnamed faces of a cluster, by id (a page of them: ``limit``, ``offset``)."""
    page = "" if limit is None else f" LIMIT {int(limit)} OFFSET {int(offset)}"
    return [int(r[0]) for r in c.execute(
        "SELECT id FROM faces WHERE cluster_id = ? AND identity_id IS NULL ORDER BY id" + page, (cluster,))]


def cluster_photos(c: Conn, cluster: int, limit: int) -> list[str]:
    return [str(r[0]) for r in c.execute(
        "SELECT p.key FROM faces f JOIN photos p ON p.id = f.photo_id WHERE f.cluster_id = ? "
        "AND f.identity_id IS NULL GROUP BY p.key ORDER BY MIN(f.id) LIMIT ?", (cluster, limit))]


def name_faces(c: Conn, face_ids: Sequence[int], identity_id: int) -> None:
    """The faces become the identity's (they leave their cluster)."""
    c.executemany("UPDATE faces SET identity_id = ?, cluster_id = NULL WHERE id = ?",
                  [(identity_id, f) for f in face_ids])


def unnamed_face(c: Conn, face_id: int) -> bool | None:
    """None: no such face; True: it has no identity."""
    row = c.execute("SELECT identity_id FROM faces WHERE id = ?", (face_id,)).fetchone()
    return None if row is None else row[0] is None
