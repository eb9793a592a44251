"""Our MTCNN cascade (ONNX Runtime + NumPy) against facenet-pytorch's, which it replaces, on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model.mtcnn import Mtcnn, box_means, crops_of, nms, resampled, summed_area
from tests.conftest import LFW, ORL


def _photos() -> list[np.ndarray]:
    lfw = sorted(LFW.glob("*/*.jpg"))[::400]  # 34 LFW photos: 250x250, often several faces
    orl = [ORL / f"s{p}" / f"{i}.pgm" for p in range(1, 41, 4) for i in (1, 4)]  # 20 small greyscale faces
    orl.append(ORL / "s19" / "4.pgm")  # O-Net scores two boxes equally: the last suppression's order decides
    photos = [np.asarray(Image.open(f).convert("RGB")) for f in lfw + orl]
    group = np.concatenate(photos[:4], axis=1)  # a wide photo with four faces
    return [*photos, group, np.full((200, 300, 3), 128, np.uint8)]


def test_boxes_scores_and_landmarks_equal_facenet_pytorchs() -> None:
    from facenet_pytorch import MTCNN

    reference = MTCNN(keep_all=True, min_face_size=20, device=torch.device("cpu"), post_process=False)
    ours = Mtcnn(min_face_size=20, threads=1)
    found = 0
    for rgb in _photos():
        with torch.inference_mode():
            boxes, scores, points = reference.detect(Image.fromarray(rgb), landmarks=True)
        b, s, p = ours.detect(rgb)
        if boxes is None:
            assert len(b) == 0
            continue
        order = np.argsort(-(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), kind="stable")  # the reference: largest first
        assert len(b) == len(boxes)
        np.testing.assert_allclose(b[order], boxes.astype(np.float32), atol=1e-3)
        np.testing.assert_allclose(s[order], scores.astype(np.float32), atol=1e-5)
        np.testing.assert_allclose(p[order], points.astype(np.float32), atol=1e-3)
        found += len(b)
    assert found >= 60  # LFW photos hold more than one face now and then; the group photo four


def test_a_pyramid_level_read_from_the_summed_area_table_equals_pytorchs_area_interpolation() -> None:
    rgb = np.asarray(Image.open(sorted(LFW.glob("*/*.jpg"))[0]).convert("RGB"))
    region = np.ascontiguousarray(rgb[17:140, 3:201])
    whole = np.array([0]), np.array([region.shape[0]]), np.array([0]), np.array([region.shape[1]])
    for size in [(150, 150), (24, 24), (48, 48), (7, 300)]:  # down, up, mixed
        ours = resampled(summed_area(region), *size)
        assert np.array_equal(ours, box_means(summed_area(region), *whole, *size)[0])  # the same sums, read apart
        ref = torch.nn.functional.interpolate(torch.from_numpy(region.copy()).permute(2, 0, 1)[None].float(),
                                              size=size, mode="area")[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_a_stages_crops_read_from_the_summed_area_table_equal_pytorchs_area_interpolation() -> None:
    rgb = np.asarray(Image.open(sorted(LFW.glob("*/*.jpg"))[0]).convert("RGB"))
    # inside; over the left/top edge; over the right/bottom edge; smaller than the output; wholly outside
    boxes = np.array([[3.7, 17.2, 201.9, 140.5, 0.9], [-30.0, -12.5, 60.2, 80.0, 0.8],
                      [180.0, 200.0, 290.0, 260.0, 0.7], [100.0, 100.0, 109.0, 104.0, 0.6],
                      [260.0, 10.0, 300.0, 50.0, 0.5]], np.float32)
    for size in (24, 48):
        kept, crops = crops_of(summed_area(rgb), boxes, size)
        assert np.array_equal(kept, boxes[:4]) and crops.shape == (4, size, size, 3) and crops.dtype == np.float32
        for box, crop in zip(kept, crops, strict=True):
            x0, y0 = max(int(box[0]), 1) - 1, max(int(box[1]), 1) - 1  # facenet-pytorch's clipped region
            x1, y1 = min(int(box[2]), rgb.shape[1]), min(int(box[3]), rgb.shape[0])
            region = torch.from_numpy(rgb[y0:y1, x0:x1].copy()).permute(2, 0, 1)[None].float()
            ref = torch.nn.functional.interpolate(region, size=(size, size), mode="area")[0].permute(1, 2, 0).numpy()
            np.testing.assert_allclose(crop, ref, atol=1e-3)


@pytest.mark.parametrize("iou", [0.3, 0.5, 0.7])
def test_nms_keeps_what_torchvision_keeps(iou: float) -> None:
    from torchvision.ops import nms as reference

    rng = np.random.default_rng(int(iou * 10))
    corner = rng.uniform(0, 100, (300, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(5, 40, (300, 2))], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    kept = reference(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
    np.testing.assert_array_equal(nms(boxes, scores, iou), kept)
