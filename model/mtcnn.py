"""MTCNN (Zhang et al. 2016): its three networks run by ONNX Runtime, the cascade around them in NumPy.

The computation is facenet-pytorch's ``detect_face`` (whose bundled weights these are, exported to the graphs in
model/weights), step for step: an image pyramid resampled by area averaging, P-Net's proposals per scale, NMS per
scale (IoU 0.5) and across scales (0.7), R-Net and then O-Net on area-resampled crops of the squared boxes, O-Net's
landmarks, and a last NMS on the smaller box's area (0.7). What changed is how, not what: the networks run in ONNX
Runtime, and area resampling, for which PyTorch's adaptive pooling took a fifth of detection's time, is cheaper:
every pyramid level and all of a stage's crops are box means read at once from the photo's summed-area table.
Boxes, scores and landmarks equal facenet-pytorch's within float rounding
(tests/model/test_mtcnn.py; bench/detector.py measures both on ORL, LFW and CFP).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model.onnx_runtime import session

# facenet-pytorch's P-Net, R-Net and O-Net as ONNX graphs (`facesearch export-onnx --detector` writes them)
GRAPHS = tuple(Path(__file__).parent / "weights" / f"mtcnn-{net}.onnx" for net in ("pnet", "rnet", "onet"))
THRESHOLDS = (0.6, 0.7, 0.7)  # P-Net, R-Net, O-Net face scores (facenet-pytorch's defaults)
FACTOR = 0.709  # pyramid step: each level's side times this


class Mtcnn:
    """uint8 (H, W, 3) RGB -> boxes (N, 4) x1 y1 x2 y2, scores (N,), landmarks (N, 5, 2), in the photo's pixels."""

    def __init__(self, *, min_face_size: int = 20, threads: int = 2) -> None:
        self.min_face_size = min_face_size
        self.pnet, self.rnet, self.onet = (session(str(graph), threads=threads) for graph in GRAPHS)

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        table = summed_area(rgb)  # every pyramid level and every crop is read from it
        boxes = self._proposals(table)
        if len(boxes):
            boxes = self._refine(table, boxes)
        if len(boxes):
            boxes, crops = crops_of(table, boxes, 48)
        if not len(boxes):
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        return self._output(boxes, crops)

    def _proposals(self, table: np.ndarray) -> np.ndarray:
        """P-Net over the pyramid: candidate boxes (N, 5) x1 y1 x2 y2 score, regressed and squared."""
        h, w = table.shape[0] - 1, table.shape[1] - 1
        found = []
        for scale in pyramid(h, w, self.min_face_size):
            level = resampled(table, int(h * scale + 1), int(w * scale + 1))[None]
            reg, prob = self.pnet.run(None, {"x": normalise(level)})
            boxes = grid_boxes(reg[0], prob[0, 1], scale, THRESHOLDS[0])
            found.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
        boxes = np.concatenate(found) if found else np.zeros((0, 9), np.float32)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        size = boxes[:, 2:4] - boxes[:, 0:2]
        regressed = boxes[:, :4] + boxes[:, 5:9] * np.concatenate([size, size], axis=1)
        return square(np.concatenate([regressed, boxes[:, 4:5]], axis=1))

    def _refine(self, table: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """R-Net on 24x24 crops: the boxes it keeps, regressed and squared."""
        boxes, crops = crops_of(table, boxes, 24)
        if not len(boxes):
            return boxes
        reg, prob = self.rnet.run(None, {"x": normalise(crops)})
        keep = prob[:, 1] > THRESHOLDS[1]
        boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2]], axis=1)
        reg = reg[keep]
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
        return square(regress(boxes[pick], reg[pick]))

    def _output(self, boxes: np.ndarray, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """O-Net on the boxes' 48x48 crops: final boxes, scores and five landmarks each."""
        reg, points, prob = self.onet.run(None, {"x": normalise(crops)})
        keep = prob[:, 1] > THRESHOLDS[2]
        boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2]], axis=1)
        reg, points = reg[keep], points[keep]
        side_w = boxes[:, 2:3] - boxes[:, 0:1] + 1
        side_h = boxes[:, 3:4] - boxes[:, 1:2] + 1
        landmarks = np.stack([side_w * points[:, :5] + boxes[:, 0:1] - 1,
                              side_h * points[:, 5:] + boxes[:, 1:2] - 1], axis=2)
        boxes = regress(boxes, reg)
        pick = nms_min(boxes[:, :4], boxes[:, 4], 0.7)
        return boxes[pick, :4], boxes[pick, 4], landmarks[pick]


def pyramid(h: int, w: int, min_face_size: int) -> list[float]:
    """The scales at which P-Net's 12-px window sees faces of ``min_face_size`` px and up."""
    scale = 12.0 / min_face_size
    side = min(h, w) * scale
    scales = []
    while side >= 12:
        scales.append(scale)
        scale *= FACTOR
        side *= FACTOR
    return scales


def normalise(pixels: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) 0-255 -> the networks' (N, 3, H, W) input, (x - 127.5) / 128."""
    return np.ascontiguousarray(((pixels - np.float32(127.5)) * np.float32(0.0078125)).transpose(0, 3, 1, 2))


def grid_boxes(reg: np.ndarray, prob: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """P-Net's map -> boxes (N, 9): x1 y1 x2 y2 score and four offsets, for the cells scoring >= threshold."""
    ys, xs = np.nonzero(prob >= threshold)
    cells = np.stack([xs, ys], axis=1).astype(np.float32)
    s = np.float32(scale)
    q1 = np.floor((2 * cells + 1) / s)
    q2 = np.floor((2 * cells + 12) / s)
    return np.concatenate([q1, q2, prob[ys, xs, None], reg[:, ys, xs].T], axis=1).astype(np.float32)


def regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Boxes (N, 5) moved by the network's offsets (N, 4), in units of the box's side (pixels inclusive)."""
    out = boxes.copy()
    side = np.concatenate([boxes[:, 2:4] - boxes[:, 0:2] + 1] * 2, axis=1)
    out[:, :4] = boxes[:, :4] + reg * side
    return out


def square(boxes: np.ndarray) -> np.ndarray:
    """Each box (N, 5) widened to a square on its longer side, about its centre."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def summed_area(rgb: np.ndarray) -> np.ndarray:
    """(H + 1, W + 1, 3) integers: entry (y, x) sums the photo's pixels above and left of it, exactly (int32 when the
    whole photo's sum fits, as it does up to 8 megapixels: half the memory to read back than int64)."""
    dtype = np.int32 if rgb.shape[0] * rgb.shape[1] * 255 < 2**31 else np.int64
    table = np.zeros((rgb.shape[0] + 1, rgb.shape[1] + 1, 3), dtype)
    np.cumsum(rgb, axis=0, dtype=dtype, out=table[1:, 1:])
    np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
    return table


def crops_of(table: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of each box inside the photo (``table``: its :func:`summed_area`), resampled to size x size;
    boxes wholly outside the photo are dropped."""
    h, w = table.shape[0] - 1, table.shape[1] - 1
    edges = np.trunc(boxes[:, :4]).astype(np.int64)
    x0 = np.maximum(edges[:, 0], 1) - 1
    y0 = np.maximum(edges[:, 1], 1) - 1
    x1 = np.minimum(edges[:, 2], w)
    y1 = np.minimum(edges[:, 3], h)
    inside = (x1 > x0) & (y1 > y0)
    return boxes[inside], box_means(table, y0[inside], y1[inside], x0[inside], x1[inside], size, size)


def box_means(table: np.ndarray, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray,
              oh: int, ow: int) -> np.ndarray:
    """Regions [y0, y1) x [x0, x1) of the photo (N each; ``table``: its :func:`summed_area`) resampled to oh x ow by
    area averaging: float32 (N, oh, ow, 3). Output pixel (i, j) is the mean of rows floor(i H / oh) ..
    ceil((i + 1) H / oh) - 1 and the columns likewise, as PyTorch's ``interpolate(mode="area")`` (adaptive average
    pooling) takes them: an integer rectangle, so four lookups in the table give its exact sum."""
    if not len(y0):
        return np.zeros((0, oh, ow, 3), np.float32)
    rows = _cells(y0, y1, oh)  # (2, N, oh): each output row's first and last-plus-one input row
    cols = _cells(x0, x1, ow)
    pixels = _items(table.reshape(-1, 3))
    stride = table.shape[1]

    def at(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return _values(np.take(pixels, r[:, :, None] * stride + c[:, None, :]), table.dtype)  # (N, oh, ow, 3)

    sums = at(rows[1], cols[1]) - at(rows[0], cols[1]) - at(rows[1], cols[0]) + at(rows[0], cols[0])
    area = (rows[1] - rows[0])[:, :, None, None] * (cols[1] - cols[0])[:, None, :, None]
    out: np.ndarray = np.divide(sums, area, dtype=np.float32)
    return out


def resampled(table: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """The whole photo (``table``: its :func:`summed_area`) resampled to oh x ow by area averaging, as
    :func:`box_means` does, computed separably: each output row's band of rows (two rows of the table), then each
    output column's span of that band: float32 (oh, ow, 3)."""
    rows = _cells(np.array([0]), np.array([table.shape[0] - 1]), oh)[:, 0]  # (2, oh)
    cols = _cells(np.array([0]), np.array([table.shape[1] - 1]), ow)[:, 0]
    bands = _items(table[rows[1]] - table[rows[0]])  # (oh, W + 1): each band's sums left of every column
    sums = _values(np.take(bands, cols[1], axis=1), table.dtype) - _values(np.take(bands, cols[0], axis=1), table.dtype)
    area = (rows[1] - rows[0])[:, None, None] * (cols[1] - cols[0])[None, :, None]
    out: np.ndarray = np.divide(sums, area, dtype=np.float32)
    return out


def _items(a: np.ndarray) -> np.ndarray:
    """A C-contiguous (..., 3) array as (...) items of its three channels: NumPy gathers whole items (np.take on a
    fixed-size byte type) 3-6x faster than rows of a 2-D array, the gathers above being most of their cost."""
    return np.ascontiguousarray(a).view(np.dtype((np.void, 3 * a.itemsize)))[..., 0]


def _values(items: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """:func:`_items`' inverse: (...) items -> (..., 3) of ``dtype``."""
    return items[..., None].view(dtype)


def _cells(start: np.ndarray, stop: np.ndarray, n: int) -> np.ndarray:
    """For spans [start, stop) (N,) cut into n outputs: (2, N, n) bounds, floor(i L / n) .. ceil((i + 1) L / n)."""
    length = (stop - start)[:, None]
    i = np.arange(n)
    return np.stack([start[:, None] + (i * length) // n, start[:, None] - ((-(i + 1) * length) // n)])


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression as torchvision's ``nms``: kept indices, best score first."""
    order = np.argsort(-scores, kind="stable")
    return order[_greedy(boxes[order], iou, 0.0, _iou)]


def nms_min(boxes: np.ndarray, scores: np.ndarray, overlap: float) -> np.ndarray:
    """MTCNN's last suppression, as facenet-pytorch's ``nms_numpy(..., 'Min')``: overlap over the smaller box's
    area, pixels inclusive; among equal scores the later box first, as its ascending argsort read backwards."""
    order = np.argsort(scores)[::-1]
    return order[_greedy(boxes[order], overlap, 1.0, _over_smaller)]


def _iou(inter: np.ndarray, area: np.ndarray, other: np.ndarray) -> np.ndarray:
    return inter / (area + other - inter)


def _over_smaller(inter: np.ndarray, area: np.ndarray, other: np.ndarray) -> np.ndarray:
    return inter / np.minimum(area, other)


BLOCK = 256  # boxes whose overlaps with the rest are computed at once: (BLOCK, N) floats


def _greedy(boxes: np.ndarray, threshold: float, inclusive: float, ratio: Any) -> np.ndarray:
    """Positions kept from ``boxes`` taken in order: each box not yet suppressed is kept and suppresses every later
    one whose ``ratio`` of overlap with it is not at most ``threshold``. Overlaps are computed a block of boxes
    against all later ones at a time, so the loop does one array operation per kept box."""
    x1, y1, x2, y2 = (boxes[:, k].astype(np.float32) for k in range(4))
    area = (x2 - x1 + inclusive) * (y2 - y1 + inclusive)
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for start in range(0, len(boxes), BLOCK):
        b = slice(start, start + BLOCK)
        iw = np.minimum(x2[b, None], x2[None, start:]) - np.maximum(x1[b, None], x1[None, start:]) + inclusive
        ih = np.minimum(y2[b, None], y2[None, start:]) - np.maximum(y1[b, None], y1[None, start:]) + inclusive
        inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
        beyond = ~(ratio(inter, area[b, None], area[None, start:]) <= threshold)  # NaN suppresses, as before
        for j, row in enumerate(beyond):
            if not suppressed[start + j]:
                keep.append(start + j)
                suppressed[start + j + 1 :] |= row[j + 1 :]
    return np.array(keep, dtype=np.int64)
