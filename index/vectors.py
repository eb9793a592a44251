"""FAISS index over L2-normalised float32 vectors (inner product = cosine), with on-disk snapshots.

Kinds: ``exact`` (IndexIDMap2 over IndexFlatIP) and ``hnsw`` (IndexIDMap2 over IndexRefineFlat over IndexHNSWSQ):
the graph walks float16 copies of the vectors (half the bytes to fetch per hop: 0.66x the time of the same graph
over float32 at efSearch 96 on 1M vectors, bench/gallery.py) and the k it returns are re-scored exactly against the
float32 vectors, so every similarity it reports is exact. HNSW cannot remove vectors: removed ids become
tombstones, filtered out of every search at once, until a rebuild; both copies of their vectors are overwritten
with zeros at once, so no later snapshot holds them.

A snapshot's meta carries a SHA-256 per 1 MiB block of the index file, so :func:`erase_from_snapshot` can
overwrite a deleted face's vector in place and re-hash only the blocks it touched; and where in the file the ids and
each stored copy of the vectors lie (``layout``), so that erasing a batch of faces reads the ids once and writes
only their rows: O(what is deleted) besides one read of 8 bytes a face (a snapshot without it is searched for each
vector's bytes instead).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import faiss  # its bundled stubs are partial: the index objects are typed Any here
import numpy as np

from index.spaces import Space

Kind = Literal["exact", "hnsw"]


@dataclass(frozen=True)
class Graph:
    """An HNSW graph's parameters; ``layout`` names them in its snapshots (one of another layout is rebuilt)."""

    m: int
    ef_construction: int
    ef_search: int
    layout: str


GRAPHS: dict[Space, Graph] = {
    # M=48, efConstruction=160, efSearch 112: on bench/gallery.py's 1M vectors, decisions equal to exact search's
    # for 99.65% of probes and 99.59% of strangers at p50 0.83 / 0.89 ms (the previous M=32, efConstruction=80
    # graph over float32 needed efSearch 384, 2.4 ms, for 99.5%; M=64 costs more per step than it gains)
    "people": Graph(48, 160, 112, "refine-flat/hnsw-fp16"),
    # every photo face is inserted as its photo is indexed, under the write lock: a cheaper graph inserts a face in
    # about a third of the time; its cluster joins and photo searches beside exact search's, for real faces among
    # many others: bench/photos_graph.py (bench/results/photos-graph.json)
    "photos": Graph(32, 80, 112, "refine-flat/hnsw-fp16/m32-efc80"),
}
# faiss's bundled stubs lack these or type them too narrowly
_HNSW_PARAMS: Any = getattr(faiss, "SearchParametersHNSW")  # noqa: B009
_REFINE_PARAMS: Any = getattr(faiss, "IndexRefineSearchParameters")  # noqa: B009
_HNSW_SQ: Any = getattr(faiss, "IndexHNSWSQ")  # noqa: B009
BLOCK = 1 << 20
# a loaded index gets room for this share more faces than it holds before it serves (see VectorIndex._reserve)
HEADROOM = 1 / 8
INDEX_FILE, META_FILE = "vectors.faiss", "meta.json"


class Vectors(Protocol):
    """What the gallery searches: FAISS in this process (:class:`VectorIndex`) or a Milvus collection
    (:class:`index.milvus.MilvusIndex`); a keeper (:mod:`index.keeper`) writes to it."""

    @property
    def kind(self) -> str: ...
    @property
    def live(self) -> int: ...
    @property
    def tombstone_fraction(self) -> float: ...
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...
    def remove(self, ids: np.ndarray) -> None: ...
    def search(self, queries: np.ndarray, k: int, *, ef_search: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]: ...
    def ids(self) -> np.ndarray: ...
    def holds(self, ids: np.ndarray) -> np.ndarray: ...
    def vectors(self, ids: np.ndarray) -> list[bytes]: ...
    def close(self) -> None: ...


class SnapshotError(Exception):
    """A snapshot that is missing, corrupt or does not fit; the caller rebuilds from the store."""


class VectorIndex:
    """A FAISS index in this process; its keeper (:mod:`index.local_keeper`) snapshots it under the data folder."""

    def __init__(self, dim: int, kind: Kind = "exact", space: Space = "people") -> None:
        self.dim = dim
        self.kind: Kind = kind
        self.graph = GRAPHS[space]  # HNSW's parameters (the space's)
        if kind == "exact":
            base: Any = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            graph = _HNSW_SQ(dim, faiss.ScalarQuantizer.QT_fp16, self.graph.m, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = self.graph.ef_construction
            graph.hnsw.efSearch = self.graph.ef_search
            base = faiss.IndexRefineFlat(graph)  # keeps the float32 vectors; re-scores the graph's k
            base.k_factor = 1.0
        else:
            raise ValueError(f"unknown index kind {kind!r}")
        self.index: Any = faiss.IndexIDMap2(base)
        self.tombstones: set[int] = set()

    @property
    def live(self) -> int:
        """Number of searchable vectors."""
        return int(self.index.ntotal) - len(self.tombstones)

    @property
    def tombstone_fraction(self) -> float:
        return len(self.tombstones) / max(1, int(self.index.ntotal))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """ids: int64 (n,); vectors: float32 (n, dim), L2-normalised."""
        if len(ids):
            with _threads_for(len(ids)):  # a photo's few faces: HNSW's insertion, like a search, on this thread
                self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                        np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        if self.kind == "exact":
            self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
        else:  # ids this index does not hold (a face of the other space) leave no tombstone
            held = self._zero(ids)
            self.tombstones.update(int(i) for i in held)

    def holds(self, ids: np.ndarray) -> np.ndarray:
        """bool (n,): which of ``ids`` are searchable here; a lookup per id in the id map, not a pass over it."""
        out = np.zeros(len(ids), dtype=bool)
        for n, i in enumerate(ids.tolist()):
            if i in self.tombstones:
                continue
            try:
                self.index.reconstruct(i)
                out[n] = True
            except RuntimeError:  # not in the id map
                pass
        return out

    def close(self) -> None:
        """Nothing to release: the index is this process's memory."""

    def vectors(self, ids: np.ndarray) -> list[bytes]:
        """The stored vectors (float32 bytes) of those ``ids`` that are in the index and not removed."""
        if not len(ids):
            return []
        present = np.intersect1d(faiss.vector_to_array(self.index.id_map), ids)
        return [self.index.reconstruct(int(i)).astype(np.float32).tobytes() for i in present
                if int(i) not in self.tombstones]

    def stored_forms(self, vectors: list[bytes]) -> list[bytes]:
        """Every byte form in which this index stores these float32 vectors: the float32 bytes, and under HNSW
        also the graph's float16 codes (what a deleted face's erasure must overwrite)."""
        if self.kind != "hnsw" or not vectors:
            return list(vectors)
        x = np.frombuffer(b"".join(vectors), dtype=np.float32).reshape(len(vectors), self.dim)
        codes = self._graph().storage.sa_encode(np.ascontiguousarray(x))
        return list(vectors) + [bytes(c) for c in codes]

    def _stored_rows(self) -> tuple[np.ndarray, list[np.ndarray]] | None:
        """(ids int64 (n,), every stored copy of the vectors as uint8 (n, bytes per vector)), by position; None when
        the index is empty."""
        n = int(self.index.ntotal)
        if not n:
            return None
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        flats: list[Any]
        if self.kind == "exact":
            flats = [faiss.downcast_index(self.index.index)]
        else:
            refine: Any = faiss.downcast_index(self.index.index)
            flats = [faiss.downcast_index(refine.refine_index)]
        rows = [faiss.rev_swig_ptr(f.get_xb(), n * self.dim).view(np.uint8).reshape(n, -1) for f in flats]
        if self.kind == "hnsw":
            sq: Any = faiss.downcast_index(self._graph().storage)
            rows.append(faiss.rev_swig_ptr(sq.codes.data(), n * int(sq.code_size)).reshape(n, -1))
        return ids, rows

    def _locate(self, blob: bytes) -> dict[str, Any] | None:
        """Where the ids and each copy of the vectors lie in the serialized ``blob`` (checked), or None."""
        stored = self._stored_rows()
        if stored is None:
            return None
        ids, copies = stored
        n = len(ids)
        ids_at = len(blob) - 8 * n  # IndexIDMap2 writes its id map last
        if blob[ids_at:] != ids.tobytes():
            return None
        found = []
        for rows in copies:
            nonzero = np.flatnonzero(rows.any(axis=1))
            if not len(nonzero):
                return None
            p, stride = int(nonzero[0]), rows.shape[1]
            at = blob.find(rows[p].tobytes()) - p * stride  # no row before p holds anything but zeros
            if at < 0 or any(blob[at + q * stride : at + (q + 1) * stride] != rows[q].tobytes() for q in (0, p, n - 1)):
                return None
            found.append({"at": at, "stride": stride})
        return {"ids_at": ids_at, "copies": found}

    def _graph(self) -> Any:
        refine: Any = faiss.downcast_index(self.index.index)
        return faiss.downcast_index(refine.base_index)

    def _zero(self, ids: np.ndarray) -> np.ndarray:
        """Overwrite both stored copies of ``ids``' vectors with zeros (HNSW keeps the node, as a tombstone); returns
        the ids it held."""
        held = faiss.vector_to_array(self.index.id_map)
        positions = np.nonzero(np.isin(held, ids))[0]
        if not len(positions):
            return held[positions]
        refine: Any = faiss.downcast_index(self.index.index)
        flat: Any = faiss.downcast_index(refine.refine_index)
        stored = faiss.rev_swig_ptr(flat.get_xb(), int(flat.ntotal) * self.dim).reshape(-1, self.dim)
        stored[positions] = 0.0
        sq: Any = faiss.downcast_index(self._graph().storage)
        codes = faiss.rev_swig_ptr(sq.codes.data(), int(sq.ntotal) * int(sq.code_size))
        codes.reshape(-1, int(sq.code_size))[positions] = 0
        return held[positions]

    def search(self, queries: np.ndarray, k: int, *, ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """queries: float32 (n, dim) -> (similarities float32 (n, k), ids int64 (n, k); -1 where none).

        ``ef_search``: HNSW's search breadth (default: the space's; never below k)."""
        ef = max(ef_search or self.graph.ef_search, k)
        k = max(1, min(k, self.live)) if self.live else 1
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.live == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if self.kind == "exact":
            return _search(self.index, q, k, None)
        graph = _HNSW_PARAMS(efSearch=ef)
        if self.tombstones:  # the graph sees positions: translate them to ids before the tombstone test
            dead = faiss.IDSelectorBatch(np.fromiter(self.tombstones, dtype=np.int64))
            alive = faiss.IDSelectorNot(dead)
            graph.sel = faiss.IDSelectorTranslated(self.index.id_map, alive)
        params = _REFINE_PARAMS(k_factor=1.0, base_index_params=graph)
        return _search(self.index, q, k, params)

    def ids(self) -> np.ndarray:
        """All live ids, int64, sorted."""
        all_ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        if self.tombstones:
            all_ids = all_ids[~np.isin(all_ids, np.fromiter(self.tombstones, dtype=np.int64))]
        return np.sort(all_ids)

    # --- snapshots -----------------------------------------------------------------------------------
    @property
    def layout(self) -> str:
        return _layout(self.kind, self.graph)

    def save(self, folder: Path, seq: int, model_version: str) -> None:
        """Write index + meta atomically (temp file, fsync, rename); meta carries the file's block hashes."""
        folder.mkdir(parents=True, exist_ok=True)
        blob = np.asarray(faiss.serialize_index(self.index)).tobytes()
        _atomic_write(folder / INDEX_FILE, blob)
        meta = {
            "seq": seq, "kind": self.kind, "layout": self.layout, "dim": self.dim,
            "model_version": model_version,
            "ntotal": int(self.index.ntotal), "tombstones": sorted(self.tombstones), "size": len(blob),
            "blocks": _block_hashes(blob), "rows": self._locate(blob),
        }
        _atomic_write(folder / META_FILE, json.dumps(meta).encode())
        _fsync_dir(folder)

    @classmethod
    def load(cls, folder: Path, *, dim: int, kind: Kind, model_version: str, space: Space = "people"
             ) -> tuple[VectorIndex, int]:
        """Load a snapshot; returns (index, the store change counter it reflects). Raises SnapshotError."""
        try:
            meta = json.loads((folder / META_FILE).read_text())
            blob = (folder / INDEX_FILE).read_bytes()
        except (OSError, ValueError) as e:
            raise SnapshotError(f"no readable snapshot: {e}") from e
        if not isinstance(meta, dict) or meta.get("size") != len(blob) or meta.get("blocks") != _block_hashes(blob):
            raise SnapshotError("snapshot checksum mismatch")
        if (meta.get("dim") != dim or meta.get("kind") != kind or meta.get("model_version") != model_version
                or meta.get("layout", "flat") != _layout(kind, GRAPHS[space])):
            raise SnapshotError("snapshot made for another dimension, kind, layout or model")
        try:
            index: Any = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        except RuntimeError as e:
            raise SnapshotError(f"cannot deserialize snapshot: {e}") from e
        if index.d != dim or index.ntotal != meta.get("ntotal"):
            raise SnapshotError("snapshot does not match its meta")
        obj = cls.__new__(cls)
        obj.dim, obj.kind, obj.index, obj.graph = dim, kind, index, GRAPHS[space]
        obj.tombstones = {int(t) for t in meta.get("tombstones", [])}
        obj._reserve(max(1024, int(index.ntotal * HEADROOM)))
        return obj, int(meta["seq"])

    def _reserve(self, faces: int) -> None:
        """Room for ``faces`` more faces in every array an insertion appends to. A deserialized index's arrays are
        exactly full, so the first face added after a start would move all of them (3 GB at 1M HNSW faces of 512
        floats: 1.8 s, measured, with every search and write waiting on the write lock); this moves them once,
        before the service is ready. The arrays are grown and shrunk back: a vector keeps its capacity."""
        def grow(vector: Any, by: int) -> None:
            n = int(vector.size())
            vector.resize(n + by)
            vector.resize(n)

        grow(self.index.id_map, faces)
        if self.kind == "exact":
            flat: Any = faiss.downcast_index(self.index.index)
            grow(flat.codes, faces * int(flat.code_size))
            return
        refine: Any = faiss.downcast_index(self.index.index)
        flat = faiss.downcast_index(refine.refine_index)
        graph = self._graph()
        sq: Any = faiss.downcast_index(graph.storage)
        hnsw, n = graph.hnsw, max(1, int(self.index.ntotal))
        for vector, per_face in ((flat.codes, int(flat.code_size)), (sq.codes, int(sq.code_size)),
                                 (hnsw.levels, 1), (hnsw.offsets, 1),
                                 (hnsw.neighbors, max(1, int(hnsw.neighbors.size()) // n))):
            grow(vector, faces * per_face)


def _layout(kind: Kind, graph: Graph) -> str:
    return graph.layout if kind == "hnsw" else "flat"


def erase_from_snapshot(folder: Path, ids: np.ndarray, vectors: list[bytes], forms: list[bytes]) -> int:
    """Overwrite every stored copy of the faces ``ids`` (their float32 ``vectors``) in the snapshot's index file with
    zeros, in place, fsync it and re-hash the blocks touched. Returns how many copies were overwritten.

    With the snapshot's ``rows`` layout, each face's rows are found by its position among the file's ids; without
    it, every byte ``form`` the index stores the vectors in (:meth:`VectorIndex.stored_forms`) is searched for.
    The snapshot stays loadable: a zeroed vector belongs to a deleted face, which the change log replayed after the
    snapshot removes again."""
    path = folder / INDEX_FILE
    try:
        meta = json.loads((folder / META_FILE).read_text())
        f = open(path, "r+b")  # noqa: SIM115 (closed below; mmap needs the open file)
    except (OSError, ValueError):
        return 0  # no snapshot: nothing to erase
    touched: set[int] = set()
    copies = 0

    def zero(start: int, length: int) -> None:
        nonlocal copies
        m[start : start + length] = bytes(length)
        copies += 1
        touched.update(range(start // BLOCK, (start + length - 1) // BLOCK + 1))

    with f:
        if os.fstat(f.fileno()).st_size == 0:
            return 0
        with mmap.mmap(f.fileno(), 0) as m:
            layout = meta.get("rows") if isinstance(meta, dict) else None
            if layout and len(ids) and meta.get("size") == len(m):
                n = int(meta["ntotal"])
                held = np.frombuffer(m, dtype=np.int64, count=n, offset=int(layout["ids_at"]))
                positions = np.flatnonzero(np.isin(held, ids)).tolist()
                del held  # a view into the map: released before the map closes
                for copy in layout["copies"]:
                    at, stride = int(copy["at"]), int(copy["stride"])
                    for p in positions:
                        zero(at + p * stride, stride)
                forms = []  # a face not among the file's ids is not in it (another face's equal vector stays)
            for v in forms:  # a snapshot written without the layout
                start = m.find(v)
                while start >= 0:
                    zero(start, len(v))
                    start = m.find(v, start + len(v))
            if touched:
                m.flush()
                blocks = meta.get("blocks")
                if isinstance(blocks, list) and len(blocks) * BLOCK >= len(m):
                    for b in touched:
                        blocks[b] = hashlib.sha256(m[b * BLOCK : (b + 1) * BLOCK]).hexdigest()
        if touched:
            os.fsync(f.fileno())
    if touched:
        _atomic_write(folder / META_FILE, json.dumps(meta).encode())
    return copies


def _block_hashes(blob: bytes) -> list[str]:
    view = memoryview(blob)
    return [hashlib.sha256(view[i : i + BLOCK]).hexdigest() for i in range(0, len(blob), BLOCK)]


def _search(index: Any, q: np.ndarray, k: int, params: Any) -> tuple[np.ndarray, np.ndarray]:
    # faiss.contrib.torch_utils (imported by pytorch-metric-learning) swaps Index.search for a version
    # without `params` and keeps the numpy one as search_numpy
    search = getattr(index, "search_numpy", index.search)
    with _threads_for(len(q)):
        return search(q, k, params=params)


@contextmanager
def _threads_for(n: int) -> Iterator[None]:
    """FAISS's OpenMP threads for ``n`` queries or insertions: one below 8.

    HNSW spreads queries and insertions over a thread team: a few gain nothing from it, and on a busy machine (the
    encoder using every core) waiting for the team costs a scheduler slice (a search took 8 ms instead of 0.2 ms,
    measured). omp_set_num_threads applies to the calling thread only (OpenMP's nthreads-var is per thread), so
    concurrent callers do not interfere."""
    if n >= 8:
        yield
        return
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def faiss_build() -> str:
    """Which FAISS this process loaded (version and the CPU features its build uses), for the start-up log."""
    options = faiss.get_compile_options() if hasattr(faiss, "get_compile_options") else ""
    return f"FAISS {faiss.__version__} ({options.strip() or 'generic build'})"
