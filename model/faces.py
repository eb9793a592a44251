"""Face detection (YuNet or MTCNN), 5-point alignment onto a canonical template, and quality figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from model.names import CHIPS, DETECTORS

# The common ArcFace 112x112 template: left eye, right eye, nose tip, left and right mouth corners
# (left/right as seen in the photo).
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


# YuNet's face score kept. Not tuned here: between the 0.3 at which it missed 3 of CFP's 2,000 profiles
# (../shared/notes/edgeface-yunet.md) and OpenCV's default 0.9; at 0.6 bench/detector.py measured 10 misses in 1,000
# CFP profiles (MTCNN at its 0.9: 36) and no miss on ORL, LFW, CFP frontal or group photos.
YUNET_MIN_SCORE = 0.6


@dataclass(frozen=True)
class Face:
    """One detected face. box: [x1, y1, x2, y2] and landmarks: (5, 2), in the original photo's pixels."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def size(self) -> float:
        """Face size in pixels: the shorter side of the box."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


class FaceDetector:
    """Every face of a photo with box, score and five landmarks: ``kind`` names the network, YuNet
    (:mod:`model.yunet`, the default since encoder v3) or MTCNN (:mod:`model.mtcnn`, encoder v2's), both run by
    ONNX Runtime. The encoder's config names the detector it was trained and evaluated with.

    Photos larger than ``max_side`` are downscaled for detection (YuNet: to 640 px, its training scale); results
    are mapped back to the original photo's coordinates. Thread-safe: ONNX Runtime sessions may be run from several
    threads at once and neither network keeps state between calls. ``threads``: ONNX Runtime's threads inside each
    network call (0: one per core). ``min_score``: the face score kept (None: the detector's own default).
    """

    def __init__(self, kind: str = "yunet", *, min_face_size: int = 20, max_side: int = 1024,
                 min_score: float | None = None, threads: int = 0) -> None:
        if kind not in DETECTORS:
            raise ValueError(f"unknown detector {kind!r} (one of {', '.join(DETECTORS)})")
        self.kind = kind
        self.min_face_size = min_face_size
        self.max_side = max_side
        self._net: Any
        if kind == "yunet":
            from model.yunet import YuNet

            self.min_score = YUNET_MIN_SCORE if min_score is None else min_score
            self._net = YuNet(min_score=self.min_score, threads=threads or None)
        else:
            from model.mtcnn import Mtcnn

            self.min_score = 0.9 if min_score is None else min_score
            self._net = Mtcnn(min_face_size=min_face_size, threads=threads)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """rgb: uint8 (H, W, 3). Returns faces sorted largest first."""
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = rgb
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        if min(small.shape[:2]) < 12:  # below MTCNN's smallest pyramid level; no face in a dozen pixels
            return []
        boxes, scores, points = self._net.detect(small)
        faces = []
        for box, prob, pts in zip(boxes, scores, points, strict=True):
            if prob < self.min_score:
                continue
            box = np.asarray(box, dtype=np.float64) / scale
            box[[0, 2]] = box[[0, 2]].clip(0, w)
            box[[1, 3]] = box[[1, 3]].clip(0, h)
            face = Face(box=box, score=float(prob), landmarks=np.asarray(pts, dtype=np.float64) / scale)
            if face.size >= self.min_face_size * 0.8:
                faces.append(face)
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces


def template(size: int) -> np.ndarray:
    """The ArcFace template scaled to a square crop of ``size`` pixels, shape (5, 2)."""
    return ARCFACE_TEMPLATE_112 * (size / 112.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama) mapping src (N, 2) onto dst (N, 2); returns (2, 3)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.T @ sc / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    var_s = (sc**2).sum() / len(src)
    scale = float((s * d).sum() / var_s) if var_s > 0 else 1.0
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def align(rgb: np.ndarray, landmarks: np.ndarray, size: int, dst: np.ndarray | None = None) -> np.ndarray:
    """Warp the face with these 5 landmarks onto ``dst`` (default: the ArcFace template at ``size``);
    returns uint8 (size, size, 3)."""
    m = similarity_transform(landmarks, template(size) if dst is None else dst)
    a = m[:, :2]
    a_inv = np.linalg.inv(a)
    t_inv = -a_inv @ m[:, 2]
    # PIL maps each output pixel (x, y) to the input pixel (a x + b y + c, d x + e y + f).
    coeffs = (a_inv[0, 0], a_inv[0, 1], t_inv[0], a_inv[1, 0], a_inv[1, 1], t_inv[1])
    out = Image.fromarray(rgb).transform((size, size), Image.Transform.AFFINE, data=coeffs,
                                     resample=Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


SOURCE_MAX_SIZE = 256
SOURCE_CONTEXT = 2.0


def source_crop(rgb: np.ndarray, face: Face, *, max_size: int = SOURCE_MAX_SIZE, context: float = SOURCE_CONTEXT
                ) -> tuple[np.ndarray, dict[str, object]]:
    """A model-independent crop for re-embedding with future encoders: a square of ``context`` times the box's
    longer side, centred on the box (outside the photo black, as the aligners fill it), at the photo's own
    resolution, downscaled (Lanczos) only where it is larger than ``max_size`` px: an aligner then cuts its chip
    from the very pixels it would have cut it from in the photo.

    Returns the crop (uint8 (S, S, 3)) and its geometry: the face's box, landmarks and score in the crop's
    pixels, and ``origin``/``scale`` to map them back to the photo (photo = origin + crop / scale).
    Any aligner can cut its chip from it as from the photo (:func:`face_in_source`)."""
    x1, y1, x2, y2 = (float(v) for v in face.box)
    side = max(1, int(np.ceil(context * max(x2 - x1, y2 - y1, 1.0))))
    x0 = int(np.floor((x1 + x2) / 2 - side / 2))
    y0 = int(np.floor((y1 + y2) / 2 - side / 2))
    region = Image.fromarray(rgb).crop((x0, y0, x0 + side, y0 + side))  # PIL fills outside the photo with black
    size = min(side, max_size)
    if size != side:
        region = region.resize((size, size), Image.Resampling.LANCZOS)
    crop = np.asarray(region, dtype=np.uint8)
    scale = size / side
    origin = np.array([x0, y0], dtype=np.float64)
    geometry: dict[str, object] = {
        "size": size, "origin": [x0, y0], "scale": scale, "score": float(face.score),
        "box": [round(float(v), 3) for v in ((face.box.reshape(2, 2) - origin) * scale).ravel()],
        "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in (face.landmarks - origin) * scale],
    }
    return crop, geometry


def face_in_source(geometry: dict[str, object]) -> Face:
    """The face of a source crop, in the crop's pixels (for :class:`Aligner`)."""
    return Face(box=np.asarray(geometry["box"], dtype=np.float64), score=float(geometry.get("score", 0.0)),  # type: ignore[arg-type]
                landmarks=np.asarray(geometry["landmarks"], dtype=np.float64))


class Aligner:
    """Cuts the chip an encoder was trained on from a photo: (rgb uint8 (H, W, 3), face) -> uint8 (S, S, 3).

    ``template``: a similarity transform of MTCNN's five points onto the checkpoint's template (S px).
    ``dlib5``: dlib's 5-point shape predictor inside MTCNN's box, then dlib's chip with ``padding``
    (:mod:`model.dlib_chip`). The checkpoint names its chip; evaluation, training and serving all cut it here.
    """

    def __init__(self, chip: str, size: int, template_points: np.ndarray | list[list[float]],
                 padding: float = 0.25) -> None:
        if chip not in CHIPS:
            raise ValueError(f"unknown chip {chip!r} (one of {', '.join(CHIPS)})")
        self.chip = chip
        self.size = size
        self.template = np.asarray(template_points, dtype=np.float64)
        self._dlib = None
        if chip == "dlib5":
            from model.dlib_chip import DlibChipper

            self._dlib = DlibChipper(size, padding)

    def __call__(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        if self._dlib is not None:
            return self._dlib(rgb, face.box)
        return align(rgb, face.landmarks, self.size, self.template)


@dataclass(frozen=True)
class Quality:
    face_size: float  # pixels, shorter side of the box
    blur: float  # variance of the Laplacian of the aligned crop (higher = sharper)
    yaw: float  # degrees, estimated from the landmarks (0 = frontal)


def blur_score(crop: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the greyscale crop (uint8 (H, W, 3))."""
    g = crop.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(lap.var())


def yaw_estimate(landmarks: np.ndarray) -> float:
    """Yaw in degrees from where the nose sits between the eyes (a coarse, monotonic estimate)."""
    le, re, nose = landmarks[0], landmarks[1], landmarks[2]
    eye_span = re[0] - le[0]
    if abs(eye_span) < 1e-6:
        return 90.0
    ratio = (nose[0] - le[0]) / eye_span  # 0.5 when frontal
    return float(np.degrees(np.arcsin(np.clip(2.0 * ratio - 1.0, -1.0, 1.0))))


def quality(face: Face, crop: np.ndarray) -> Quality:
    return Quality(face_size=face.size, blur=blur_score(crop), yaw=yaw_estimate(face.landmarks))
