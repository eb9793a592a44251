"""YuNet (Wu, Peng, Yu 2023; libfacedetection): one small network finds faces with five landmarks each; its
outputs are decoded here in NumPy.

The graph (``model/weights/yunet-n.onnx``, libfacedetection.train's ``yunet_n_dynamic.onnx``, Apache-2.0,
trained on WIDER FACE) takes a BGR float photo of any size divisible by 32 and answers, for strides 8, 16 and 32,
per grid cell: a class score and an objectness (the face score is their geometric mean), a box (centre offset in
cells, log size in cells) and five points (offsets in cells: the subject's right eye, left eye, nose tip, right
and left mouth corners, i.e. left to right as seen in the photo). The photo is downscaled so that its longer side
is at most ``max_side`` and padded at the bottom and right to a multiple of 32; small photos are upscaled to
``min_side`` (a face filling a 92x112 photo is larger than most of WIDER FACE's). Boxes are suppressed greedily
at IoU 0.3 (what YuNet's authors use).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from model.mtcnn import nms
from model.onnx_runtime import session

GRAPH = Path(__file__).parent / "weights" / "yunet-n.onnx"
STRIDES = (8, 16, 32)
NMS_IOU = 0.3


class YuNet:
    """uint8 (H, W, 3) RGB -> boxes (N, 4) x1 y1 x2 y2, scores (N,), landmarks (N, 5, 2), in the photo's pixels,
    best score first. ``min_score``: the face score kept (0..1)."""

    def __init__(self, *, min_score: float = 0.6, max_side: int = 640, min_side: int = 160,
                 threads: int | None = 2, graph: Path = GRAPH) -> None:
        self.min_score = min_score
        self.max_side = max_side
        self.min_side = min_side
        self.session = session(str(graph), threads=threads)
        self._outputs = [o.name for o in self.session.get_outputs()]

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = rgb.shape[:2]
        scale = min(self.max_side / max(h, w), max(1.0, self.min_side / min(h, w)))
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        img = rgb if (sw, sh) == (w, h) else np.asarray(Image.fromarray(rgb).resize((sw, sh),
                                                                                   Image.Resampling.BILINEAR))
        pw, ph = -(-sw // 32) * 32, -(-sh // 32) * 32
        x = np.zeros((1, 3, ph, pw), np.float32)
        x[0, :, :sh, :sw] = img[:, :, ::-1].transpose(2, 0, 1)  # BGR, 0..255, as the network was trained
        out = dict(zip(self._outputs, self.session.run(self._outputs, {"input": x}), strict=True))
        boxes, scores, points = decode(out, ph, pw, self.min_score)
        keep = nms(boxes, scores, NMS_IOU)
        sx, sy = w / sw, h / sh  # back to the photo's pixels (the padding lies beyond the photo)
        boxes = boxes[keep] * np.array([sx, sy, sx, sy], np.float32)
        points = points[keep] * np.array([sx, sy], np.float32)
        return boxes, scores[keep], points


def decode(out: dict[str, np.ndarray], height: int, width: int, min_score: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YuNet's raw outputs (``cls_8``, ``obj_8``, ``bbox_8``, ``kps_8``, ... for an input of ``height`` x ``width``)
    -> every cell's box (N, 4), score (N,) and five points (N, 5, 2) with score >= ``min_score``, in input pixels."""
    boxes, scores, points = [], [], []
    for stride in STRIDES:
        rows, cols = height // stride, width // stride
        cls = out[f"cls_{stride}"].reshape(-1).clip(0, 1)
        obj = out[f"obj_{stride}"].reshape(-1).clip(0, 1)
        score = np.sqrt(cls * obj)
        hit = np.flatnonzero(score >= min_score)
        if not len(hit):
            continue
        cell = np.stack([hit % cols, hit // cols], axis=1).astype(np.float32)  # (x, y) of each cell
        bbox = out[f"bbox_{stride}"].reshape(rows * cols, 4)[hit]
        centre = (cell + bbox[:, :2]) * stride
        size = np.exp(bbox[:, 2:4]) * stride
        boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
        kps = out[f"kps_{stride}"].reshape(rows * cols, 5, 2)[hit]
        points.append((kps + cell[:, None, :]) * stride)
        scores.append(score[hit])
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
    return (np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32),
            np.concatenate(points).astype(np.float32))
