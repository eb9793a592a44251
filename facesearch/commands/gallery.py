"""`facesearch gallery`: stats, export, import, rebuild-index (alias reindex), verify, reembed, compact, cluster.

Opens the gallery under a data folder with the encoder's dimension and model version (read from the
checkpoint's card without loading torch when ``--dim``/``--model-version`` are given).

``reembed`` embeds every face again with the checkpoint (default: the shipped weights) from its stored source
crop into a new generation, then switches to it; killed, it resumes where it stopped when run again. Faces
enrolled before source crops existed are re-embedded from their chip where it is this encoder's chip; the
others are listed (face id, identity) on stderr and in ``--report`` and block the switch until they are
enrolled again or dropped (``--drop-unrecoverable``).

``compact`` rewrites what keeps deleted faces' bytes in free space until it is reused: PostgreSQL's tables (VACUUM
FULL) and WAL (switched and checkpointed), a Milvus collection (filled again from the store); the FAISS index and
its snapshot already overwrote them at each delete. It exits 1 when the report lists copies still kept
(``"left"``: WAL recycling, archiving, replication slots, or missing privileges). Under SQLite deletes already
erase; compact only returns freed pages to the file system.

``cluster`` groups the photos' unnamed faces (``--album``: of one album) into people again from scratch (Chinese
whispers on their k-NN graph at the distance where the card's impostor FAR is 1e-4; ``bench/photos.py``);
faces also join clusters one by one as photos are indexed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from facesearch.settings import Settings
from index import transfer
from index.gallery import Gallery


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="facesearch gallery", description=__doc__)
    p.add_argument("action", choices=["stats", "export", "import", "rebuild-index", "reindex", "verify",
                                       "reembed", "compact", "cluster"])
    p.add_argument("file", nargs="?", type=Path, help="export/import file")
    # every default is the service's own (FACESEARCH_* variables, read by the same Settings as `serve`)
    p.add_argument("--data-dir", type=Path, help="the gallery's folder (default: FACESEARCH_DATA_DIR or ./data)")
    p.add_argument("--database-url", help="postgresql://... : the gallery lives in PostgreSQL "
                                           "(default: FACESEARCH_DATABASE_URL)")
    p.add_argument("--vector-url", help="Milvus (URL or Milvus Lite file) holds the vectors "
                                         "(default: FACESEARCH_VECTOR_URL)")
    p.add_argument("--index-kind", choices=["exact", "hnsw"], help="default: FACESEARCH_INDEX_KIND or exact")
    p.add_argument("--milvus-index", choices=["FLAT", "HNSW"], help="default: FACESEARCH_MILVUS_INDEX or FLAT")
    p.add_argument("--checkpoint", type=Path, help="encoder checkpoint (default: FACESEARCH_CHECKPOINT or the "
                                                    "shipped weights)")
    p.add_argument("--dim", type=int)
    p.add_argument("--model-version")
    p.add_argument("--create", action="store_true",
                   help="create an empty gallery where none exists (otherwise the command refuses)")
    p.add_argument("--report", type=Path,
                   help="reembed: where to list the faces that must be enrolled again "
                        "(default: reembed-unrecoverable.json in the data folder)")
    p.add_argument("--batch", type=int, default=64, help="reembed: faces per committed batch")
    p.add_argument("--drop-unrecoverable", action="store_true",
                   help="reembed: delete the faces no stored crop can re-embed, then switch")
    p.add_argument("--album", help="cluster: only this album's unnamed faces")
    p.add_argument("--method", choices=["whispers", "components"], default="whispers",
                   help="cluster: how clusters are read from the graph (default: whispers)")
    a = p.parse_args(argv)
    if a.action in ("export", "import") and a.file is None:
        p.error(f"{a.action} needs a file")
    overrides = {"data_dir": a.data_dir, "database_url": a.database_url, "vector_url": a.vector_url,
                 "index_kind": a.index_kind, "milvus_index": a.milvus_index, "checkpoint": a.checkpoint}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    from index.config import gallery_exists

    if not a.create and not gallery_exists(settings.data_dir, settings.database_url):
        print(f"facesearch gallery: no gallery in {settings.data_dir} (set --data-dir or FACESEARCH_DATA_DIR; "
              "--create makes an empty one)", file=sys.stderr)
        return 2
    embedder = None
    card: dict[str, Any] = {}
    if a.dim is None or a.model_version is None or a.action in ("reembed", "cluster"):
        from model.embedder import load_encoder  # only when needed: stats and verify stay torch-free

        embedder, card = load_encoder(settings.checkpoint)
        a.dim, a.model_version = embedder.dim, card["model_version"]
    from facesearch.compose import open_settings_gallery

    g = open_settings_gallery(settings, dim=a.dim, model_version=a.model_version,
                              allow_mismatch=a.action == "reembed")
    report_path = a.report or settings.data_dir / "reembed-unrecoverable.json"
    try:
        if a.action == "stats":
            print(json.dumps(g.stats(), indent=2))
        elif a.action == "export":
            transfer.export(g, a.file)
            print(f"exported {g.count()[1]} faces to {a.file}")
        elif a.action == "import":
            idents, faces = transfer.import_(g, a.file)
            print(f"imported {faces} faces of {idents} identities")
        elif a.action in ("rebuild-index", "reindex"):
            g.rebuild_index()
            print(json.dumps(g.verify(), indent=2))
        elif a.action == "verify":
            report = g.verify()
            print(json.dumps(report, indent=2))
            return 0 if report["ok"] else 1
        elif a.action == "compact":
            report = g.compact()
            print(json.dumps(report, indent=2))
            for left in report["store"]["left"]:
                print(f"still kept: {left}", file=sys.stderr)
            return 1 if report["store"]["left"] else 0
        elif a.action == "cluster":
            from facesearch.photos import cluster_threshold
            from model.calibration import Calibration

            t = cluster_threshold(Calibration(card))
            print(json.dumps({**g.photos.recluster(t, album=a.album, method=a.method, actor="cli"), "threshold": t}))
        elif a.action == "reembed":
            assert embedder is not None
            return _reembed(g, embedder, report_path, a.drop_unrecoverable, a.batch)
    finally:
        g.close()
    return 0


def _reembed(g: Gallery, embedder: Any, report_path: Path, drop: bool, batch: int) -> int:
    from tqdm import tqdm

    from model.pipeline import embed_stored

    bar = tqdm(total=g.count()[1], desc=f"reembed -> {g.model_version}", unit="face")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        report = g.reembed(lambda crops: embed_stored(embedder, crops), progress=progress, batch=batch,
                           drop_unrecoverable=drop, actor="cli")
    finally:
        bar.close()
    if report.unrecoverable:
        report_path.write_text(json.dumps(
            {"model_version": report.model_version, "dropped": report.switched,
             "faces": [f._asdict() for f in report.unrecoverable]}, indent=2))
        for f in report.unrecoverable:
            print(f"face {f.face_id} of identity {f.identity!r}: no stored crop serves {report.model_version}",
                  file=sys.stderr)
    if not report.switched and report.unrecoverable:
        print(f"facesearch gallery reembed: {len(report.unrecoverable)} faces have no stored crop this encoder can "
              f"use (listed in {report_path}); enroll their photos again, or rerun with --drop-unrecoverable to "
              "delete them; the gallery still serves its current model", file=sys.stderr)
        return 1
    if report.switched:
        rate = report.reembedded / report.seconds if report.seconds else 0.0
        print(f"re-embedded {report.reembedded} faces with {report.model_version} in {report.seconds:.1f} s "
              f"({rate:.1f} faces/s); generation {report.generation}"
              + (f"; {len(report.unrecoverable)} faces dropped" if report.unrecoverable else ""))
    else:
        print(f"the gallery already uses {report.model_version}: nothing to re-embed")
    return 0
