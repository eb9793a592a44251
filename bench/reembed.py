"""A gallery re-embedded from its source crops against the same photos enrolled directly with the new model.

    python bench/reembed.py [--people 100] [--second PATH ...] [--json PATH]

LFW people with at least four photos (the first ``--people`` by name): photos 1-2 enrolled with the shipped
weights (the source crops kept, as the service keeps them), then the gallery re-embedded with each second
checkpoint (``Gallery.reembed`` + ``embed_stored``, what `facesearch gallery reembed` runs), beside a gallery of
the same photos enrolled directly with that checkpoint. Probes: photos 3-4, embedded with the second
checkpoint. Reported per second checkpoint: the share of probes whose top-1 identity is the same in both
galleries (also among the probes the direct gallery answers right), the median and 95th percentile of
|top-1 distance in one - in the other|, the median distance between a face's re-embedded and directly embedded
vectors, and re-embedding throughput (faces/s: decode + chip + embed + commit). Second checkpoints: the shipped
weights themselves (only the source crop differs), dlib's ResNet imported as it is with MTCNN's five points onto
dlib's mean chip (another model and another chip; `facesearch import-dlib --chip template`), and any given with
``--second`` (e.g. a MobileNetV2 run).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, report  # noqa: E402

LFW = ROOT.parent / "shared" / "datasets" / "lfw" / "lfw-deepfunneled"


def people(n: int) -> list[str]:
    return sorted(d.name for d in LFW.iterdir() if (d / f"{d.name}_0004.jpg").exists())[:n]


def faces_of(pipeline: Any, names: list[str], photos: tuple[int, ...], *, sources: bool
             ) -> list[tuple[str, str, Any]]:
    """(identity, photo key, the largest face) of each photo where a face was found."""
    out = []
    for name in names:
        for k in photos:
            a = pipeline.analyze((LFW / name / f"{name}_{k:04d}.jpg").read_bytes(), max_faces=1, sources=sources)
            if a.faces:
                out.append((name, f"{name}_{k:04d}", a.faces[0]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--people", type=int, default=100)
    p.add_argument("--second", type=Path, action="append", help="a further checkpoint to re-embed for (repeat)")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    from facesearch.enrollment import new_face
    from index.gallery import Gallery
    from model.dlib_resnet import DLIB_DAT
    from model.embedder import SHIPPED_CHECKPOINT
    from model.pipeline import FacePipeline, embed_stored
    from model.train.import_dlib import dlib_models_dir, import_dlib

    names = people(a.people)
    r: dict[str, Any] = {"people": len(names)}
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "dlib-template.pt"
        import_dlib(dlib_models_dir() / DLIB_DAT, template, chip="template")
        seconds = [SHIPPED_CHECKPOINT, template, *(a.second or [])]
        first = FacePipeline(threads=2)
        enrolled = faces_of(first, names, (1, 2), sources=True)
        first.close()
        r["enrolled_faces"] = len(enrolled)
        for i, ckpt in enumerate(seconds):
            second = FacePipeline(checkpoint=ckpt, threads=2)
            tag = f"{i}:{second.model_version}"
            folder = Path(tmp) / f"reembedded-{i}"
            g = Gallery(folder, dim=first.dim, model_version=first.model_version + "-as-enrolled")
            g.add_many([(n, new_face(f, key)) for n, key, f in enrolled])  # the photo's key in the sha256 field
            g.close()
            g = Gallery(folder, dim=second.dim, model_version=second.model_version, allow_mismatch=True)
            t0 = time.perf_counter()
            rep = g.reembed(lambda crops, s=second: embed_stored(s.embedder, crops))
            took = time.perf_counter() - t0
            assert rep.switched and not rep.unrecoverable, rep
            direct = Gallery(Path(tmp) / f"direct-{i}", dim=second.dim, model_version=second.model_version)
            direct_faces = faces_of(second, names, (1, 2), sources=False)
            direct.add_many([(n, new_face(f, key)) for n, key, f in direct_faces])
            probes = faces_of(second, names, (3, 4), sources=False)
            q = np.stack([f.embedding for _, _, f in probes])
            ra, rb = g.search(q, k=1), direct.search(q, k=1)
            same = [x.identities[0].identity == y.identities[0].identity for x, y in zip(ra, rb, strict=True)]
            diff = np.abs([x.identities[0].distance - y.identities[0].distance for x, y in zip(ra, rb, strict=True)])
            right = np.mean([x.identities[0].identity == n for x, (n, _, _) in zip(ra, probes, strict=True)])
            right_direct = np.mean([y.identities[0].identity == n for y, (n, _, _) in zip(rb, probes, strict=True)])
            # face by face: the re-embedded vector against the one the model made from the same photo
            with g.store.read() as c:
                again = dict(c.execute("SELECT sha256, embedding FROM faces").fetchall())
            per_face = [float(np.linalg.norm(np.frombuffer(again[key], np.float32) - f.embedding))
                        for _, key, f in direct_faces if key in again]
            r[f"{tag} probes"] = len(probes)
            r[f"{tag} top1_same_identity"] = float(np.mean(same))
            # where near-ties among wrong candidates cannot flip the answer: probes the direct gallery gets right
            right_rows = [s_ for s_, y, (n, _, _) in zip(same, rb, probes, strict=True)
                          if y.identities[0].identity == n]
            r[f"{tag} top1_same_identity_where_direct_right"] = float(np.mean(right_rows))
            r[f"{tag} top1_distance_diff_median"] = float(np.median(diff))
            r[f"{tag} top1_distance_diff_p95"] = float(np.percentile(diff, 95))
            r[f"{tag} rank1_reembedded"] = float(right)
            r[f"{tag} rank1_direct"] = float(right_direct)
            r[f"{tag} face_vector_distance_median"] = float(np.median(per_face))
            r[f"{tag} reembed_faces_per_s"] = rep.reembedded / took
            g.close()
            direct.close()
            second.close()
    report(r, a.json, digits=4)


if __name__ == "__main__":
    main()
