"""`facesearch gallery`: stats, export, import, rebuild-index, verify, reembed.

Opens the gallery under a data folder with the encoder's dimension and model version (read from the
checkpoint's card without loading torch when ``--dim``/``--model-version`` are given).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from index.gallery import Gallery


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="facesearch gallery", description=__doc__)
    p.add_argument("action", choices=["stats", "export", "import", "rebuild-index", "verify", "reembed"])
    p.add_argument("file", nargs="?", type=Path, help="export/import file")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--index-kind", choices=["exact", "hnsw"], default="exact")
    p.add_argument("--checkpoint", type=Path, help="encoder checkpoint (default: shipped weights)")
    p.add_argument("--dim", type=int)
    p.add_argument("--model-version")
    a = p.parse_args(argv)
    if a.action in ("export", "import") and a.file is None:
        p.error(f"{a.action} needs a file")
    embedder = None
    if a.dim is None or a.model_version is None or a.action == "reembed":
        from model.encoder import load_encoder  # the gallery itself stays torch-free

        embedder, card = load_encoder(a.checkpoint)
        a.dim, a.model_version = embedder.dim, card["model_version"]
    g = Gallery(a.data_dir, dim=a.dim, model_version=a.model_version, kind=a.index_kind,
                allow_mismatch=a.action == "reembed")
    try:
        if a.action == "stats":
            print(json.dumps(g.stats(), indent=2))
        elif a.action == "export":
            g.export(a.file)
            print(f"exported {g.count()[1]} faces to {a.file}")
        elif a.action == "import":
            idents, faces = g.import_(a.file)
            print(f"imported {faces} faces of {idents} identities")
        elif a.action == "rebuild-index":
            g.rebuild_index()
            print(json.dumps(g.verify(), indent=2))
        elif a.action == "verify":
            report = g.verify()
            print(json.dumps(report, indent=2))
            return 0 if report["ok"] else 1
        elif a.action == "reembed":
            from model.pipeline import CropMismatch, embed_crop_jpegs

            assert embedder is not None
            try:
                n = g.reembed(lambda blobs: embed_crop_jpegs(embedder, blobs))
            except CropMismatch as e:  # the transaction rolled back: the gallery is as it was
                print(f"facesearch gallery reembed: {e}", file=sys.stderr)
                return 1
            print(f"re-embedded {n} faces with {a.model_version}")
    finally:
        g.close()
    return 0
