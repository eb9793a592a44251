"""YuNet: our NumPy decoding against a cell-by-cell reference, real faces found with their five points in order, any
photo size, and the graph's provenance."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from model.faces import FaceDetector
from model.yunet import GRAPH, STRIDES, YuNet, decode
from tests.conftest import LFW, ORL


def naive_decode(out: dict[str, np.ndarray], height: int, width: int, min_score: float) -> list[tuple]:
    """YuNet's decoding written as the paper's loops: one grid cell at a time."""
    found = []
    for stride in STRIDES:
        rows, cols = height // stride, width // stride
        for r in range(rows):
            for c in range(cols):
                i = r * cols + c
                score = (min(max(out[f"cls_{stride}"][0, i, 0], 0), 1) * min(max(out[f"obj_{stride}"][0, i, 0], 0), 1)
                         ) ** 0.5
                if score < min_score:
                    continue
                dx, dy, lw, lh = out[f"bbox_{stride}"][0, i]
                cx, cy, w, h = (c + dx) * stride, (r + dy) * stride, np.exp(lw) * stride, np.exp(lh) * stride
                kps = out[f"kps_{stride}"][0, i].reshape(5, 2)
                points = [((c + kx) * stride, (r + ky) * stride) for kx, ky in kps]
                found.append((score, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), points))
    return found


def test_decoding_equals_the_cell_by_cell_reference() -> None:
    rng = np.random.default_rng(0)
    height, width = 64, 96
    out = {}
    for s in STRIDES:
        n = (height // s) * (width // s)
        out[f"cls_{s}"] = rng.uniform(-0.2, 1.2, (1, n, 1)).astype(np.float32)  # clipped to 0..1 by the decoder
        out[f"obj_{s}"] = rng.uniform(0, 1, (1, n, 1)).astype(np.float32)
        out[f"bbox_{s}"] = rng.normal(0, 0.5, (1, n, 4)).astype(np.float32)
        out[f"kps_{s}"] = rng.normal(0, 1, (1, n, 10)).astype(np.float32)
    boxes, scores, points = decode(out, height, width, 0.6)
    want = naive_decode(out, height, width, 0.6)
    assert 0 < len(want) == len(boxes)
    order = np.argsort(-scores)
    want.sort(key=lambda w: -w[0])
    for j, (score, box, pts) in zip(order, want, strict=True):
        assert scores[j] == pytest.approx(score, abs=1e-6)
        np.testing.assert_allclose(boxes[j], box, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(points[j], pts, rtol=1e-5, atol=1e-3)
    assert len(decode(out, height, width, 1.01)[0]) == 0  # nothing scores above 1


def test_real_faces_have_their_five_points_in_order() -> None:
    detector = FaceDetector("yunet")
    for path in [LFW / "Colin_Powell" / "Colin_Powell_0001.jpg", ORL / "s1" / "1.pgm"]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        faces = detector.detect(rgb)
        assert faces, path
        f = faces[0]
        (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = f.landmarks
        # left to right as seen in the photo; eyes above the nose above the mouth; all inside the box
        assert lx < nx < rx and mlx < mrx
        assert max(ly, ry) < ny < min(mly, mry)
        x1, y1, x2, y2 = f.box
        assert ((f.landmarks >= [x1, y1]) & (f.landmarks <= [x2, y2])).all()
        assert 0.6 <= f.score <= 1.0


def test_any_photo_size_and_shape() -> None:
    net = YuNet(threads=1)
    face = np.asarray(Image.open(LFW / "Colin_Powell" / "Colin_Powell_0001.jpg").convert("RGB"))
    for size in [(13, 13), (31, 250), (250, 31), (97, 61), (2000, 3000)]:
        rgb = np.asarray(Image.fromarray(face).resize(size[::-1]))
        boxes, scores, points = net.detect(rgb)
        assert boxes.shape[1:] == (4,) and points.shape[1:] == (5, 2) and len(scores) == len(boxes)
    # a face filling a photo much larger than YuNet's 640 px is found at the photo's own scale
    big = np.asarray(Image.fromarray(face).resize((1500, 1500)))
    boxes, _, _ = net.detect(big)
    small, _, _ = net.detect(face)
    assert len(boxes) == 1 and len(small) == 1
    np.testing.assert_allclose(boxes[0] / 6.0, small[0], atol=6)


def test_the_shipped_graph_names_its_source_and_licence() -> None:
    import onnxruntime as ort

    meta = ort.InferenceSession(str(GRAPH)).get_modelmeta().custom_metadata_map
    assert "libfacedetection.train" in meta["facesearch.source"]
    assert "Apache-2.0" in meta["facesearch.licence"]
    assert len(meta["facesearch.source_sha256"]) == 64
