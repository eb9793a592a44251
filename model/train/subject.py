"""The subject of a dataset photo (LFW, CFP, CelebA: one person, centred): the detected face nearest the centre, or
a centred face where detection failed. Training and evaluation only; the service reports every face it finds."""

from __future__ import annotations

import numpy as np

from model.faces import Face, template


def central_face(faces: list[Face], width: int, height: int) -> Face | None:
    """The face whose box centre is nearest the photo's centre (LFW's convention for the subject)."""
    if not faces:
        return None
    cx, cy = width / 2, height / 2
    return min(faces, key=lambda f: (f.box[0] + f.box[2] - 2 * cx) ** 2 + (f.box[1] + f.box[3] - 2 * cy) ** 2)


def fallback_face(width: int, height: int) -> Face:
    """A centred face for dataset photos where detection failed (LFW's subject is centred)."""
    m = 0.275 * min(width, height)
    return Face(box=np.array([m, m, width - m, height - m]), score=0.0,
                landmarks=fallback_landmarks(width, height))


def fallback_landmarks(width: int, height: int, face_fraction: float = 0.45) -> np.ndarray:
    """Template landmarks placed on a centred square covering ``face_fraction`` of the photo.

    Used only for dataset photos where detection failed (LFW's subject is centred).
    """
    side = face_fraction * min(width, height)
    x0, y0 = (width - side) / 2, (height - side) / 2
    return template(112) / 112.0 * side + np.array([x0, y0])
