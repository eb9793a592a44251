"""The collections registry on its own (SQLite, FAISS): a deleted collection's gallery, still held by a request or the
upkeep loop, writes nothing under the data folder again."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from index import NewFace
from index.collections import Collections
from index.config import GalleryConfig, open_gallery


def test_a_deleted_collection_writes_no_snapshot_afterwards(tmp_path: Path) -> None:
    config = GalleryConfig(folder=tmp_path / "data", dim=8, model_version="m")
    default = open_gallery(config)
    collections = Collections(default, config)
    collections.create("shop-a")
    held = collections.get("shop-a")  # as a request or the upkeep loop holds it
    held.add_faces("alex", [NewFace(np.ones(8, np.float32))])
    folder = held.folder
    assert folder.is_dir()
    assert collections.delete("shop-a") == 1
    assert not folder.exists()
    assert held.snapshot(force=True) is False  # the upkeep's snapshot, a moment late
    assert not folder.exists() and not any((tmp_path / "data" / "collections").iterdir())
    collections.close()
    default.close()
