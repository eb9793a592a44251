"""Detection, alignment and quality on real faces."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from model.faces import (
    FaceDetector,
    align,
    blur_score,
    similarity_transform,
    template,
    yaw_estimate,
)
from model.train.subject import central_face
from tests.conftest import ORL, lfw_photo


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def orl_rgb(person: int, index: int, scale: int = 2) -> np.ndarray:
    img = Image.open(ORL / f"s{person}" / f"{index}.pgm").convert("RGB")
    return np.asarray(img.resize((img.width * scale, img.height * scale), Image.BICUBIC))


def test_similarity_transform_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, t = 0.3, 1.7, np.array([12.0, -4.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rot.T + t
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)


def test_alignment_lands_landmarks_on_the_template(detector: FaceDetector) -> None:
    rgb = np.asarray(Image.open(io.BytesIO(lfw_photo("Aaron_Eckhart"))).convert("RGB"))
    face = central_face(detector.detect(rgb), rgb.shape[1], rgb.shape[0])
    assert face is not None
    crop = align(rgb, face.landmarks, 112)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    # detect again on the aligned crop (padded so MTCNN sees context): landmarks sit near the template
    canvas = np.zeros((224, 224, 3), np.uint8)
    canvas[56:168, 56:168] = crop
    again = detector.detect(canvas)
    assert again, "no face found in the aligned crop"
    err = np.abs(again[0].landmarks - 56 - template(112)).max()
    assert err < 6.0, f"landmarks {err:.1f} px away from the template"


def test_two_faces_pasted_in_one_photo_give_two_faces(detector: FaceDetector) -> None:
    a, b = orl_rgb(1, 1), orl_rgb(2, 1)
    canvas = np.full((a.shape[0] + 40, a.shape[1] * 2 + 60, 3), 128, np.uint8)
    canvas[20 : 20 + a.shape[0], 20 : 20 + a.shape[1]] = a
    canvas[20 : 20 + b.shape[0], 40 + a.shape[1] : 40 + 2 * a.shape[1]] = b
    faces = detector.detect(canvas)
    assert len(faces) == 2
    xs = sorted((f.box[0] + f.box[2]) / 2 for f in faces)
    assert xs[0] < a.shape[1] + 20 < xs[1]
    for f in faces:
        assert f.landmarks.shape == (5, 2) and 0.9 <= f.score <= 1.0


def test_boxes_are_in_original_coordinates_when_downscaled() -> None:
    small = FaceDetector(max_side=200)
    rgb = orl_rgb(3, 1, scale=4)  # 368 x 448: detection runs at 200 px
    full = FaceDetector().detect(rgb)
    down = small.detect(rgb)
    assert len(full) == len(down) == 1
    np.testing.assert_allclose(down[0].box, full[0].box, atol=0.08 * rgb.shape[0])


def test_no_face_in_a_blank_image(detector: FaceDetector) -> None:
    assert detector.detect(np.full((200, 200, 3), 200, np.uint8)) == []
    assert detector.detect(np.zeros((5, 5, 3), np.uint8)) == []


def test_quality_figures() -> None:
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 255, (112, 112, 3)).astype(np.uint8)
    flat = np.full((112, 112, 3), 100, np.uint8)
    assert blur_score(sharp) > 1000 > blur_score(flat) == 0.0
    frontal = template(112)
    assert abs(yaw_estimate(frontal)) < 3
    turned = frontal.copy()
    turned[2, 0] += 15  # nose towards the right eye
    assert yaw_estimate(turned) > 20


def test_concurrent_detection_gives_the_sequential_answers(detector: FaceDetector) -> None:
    """The service detects in several worker threads at once, without a lock."""
    from concurrent.futures import ThreadPoolExecutor

    photos = [orl_rgb(p, 1) for p in range(1, 9)]
    expected = [detector.detect(p) for p in photos]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            got = list(pool.map(detector.detect, photos))
            for e, g in zip(expected, got, strict=True):
                assert len(e) == len(g) == 1
                np.testing.assert_allclose(g[0].box, e[0].box, atol=1e-3)
                np.testing.assert_allclose(g[0].landmarks, e[0].landmarks, atol=1e-3)
