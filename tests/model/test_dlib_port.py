"""The PyTorch port of dlib's face ResNet against dlib itself, on chips dlib cut from real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.dlib_resnet import DLIB_DAT, DlibResNet, read_dlib_weights
from model.embedder import load_encoder
from model.encoder import dlib_config
from model.errors import CheckpointError
from model.faces import FaceDetector
from model.train.import_dlib import dlib_models_dir, import_dlib
from model.train.subject import central_face

dlib = pytest.importorskip("dlib", reason="dlib-bin is a core dependency; its absence is a broken install")


def _photos(lfw: Path, orl: Path) -> list[np.ndarray]:
    people = sorted(p for p in lfw.iterdir() if p.is_dir())[:14]
    rgbs = [np.asarray(Image.open(next(iter(sorted(p.glob("*.jpg"))))).convert("RGB")) for p in people]
    for s in range(1, 9):  # ORL: greyscale, 92x112, upscaled as the API tests do
        img = Image.open(orl / f"s{s}" / "1.pgm").convert("RGB")
        rgbs.append(np.asarray(img.resize((img.width * 2, img.height * 2), Image.Resampling.BICUBIC)))
    return rgbs


@pytest.fixture(scope="module")
def dlib_chips(lfw: Path, orl: Path) -> list[np.ndarray]:
    """150x150 chips cut by dlib's own pipeline: HOG box, 5-point shape, get_face_chip(150, 0.25)."""
    models = dlib_models_dir()
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    chips = []
    for rgb in _photos(lfw, orl):
        rgb = np.ascontiguousarray(rgb)
        boxes = list(detector(rgb, 1))
        if boxes:
            chips.append(np.asarray(dlib.get_face_chip(rgb, predictor(rgb, boxes[0]), size=150, padding=0.25)))
    assert len(chips) >= 20, f"dlib found faces in only {len(chips)} photos"
    return chips


def test_port_equals_dlib(dlib_chips: list[np.ndarray]) -> None:
    resnet = dlib.face_recognition_model_v1(str(dlib_models_dir() / DLIB_DAT))
    want = np.stack([np.asarray(resnet.compute_face_descriptor(np.ascontiguousarray(c)), np.float32)
                     for c in dlib_chips])
    model = DlibResNet().eval()
    model.load_state_dict(read_dlib_weights(dlib_models_dir() / DLIB_DAT))
    x = (torch.from_numpy(np.stack(dlib_chips)).permute(0, 3, 1, 2).float()
         - torch.tensor([122.782, 117.001, 104.298]).view(1, 3, 1, 1)) / 256.0
    with torch.no_grad():
        got = model.raw(x).numpy()
        served = model.for_inference().raw(x.contiguous(memory_format=torch.channels_last)).numpy()
    assert np.abs(got - want).max() < 1e-4
    assert np.abs(served - want).max() < 1e-4  # affines folded into the convolutions
    # the vectors are not trivially alike: different people are far apart in dlib's space too
    assert np.linalg.norm(want[0] - want[1]) > 0.3


def test_served_preprocessing_equals_dlibs(tmp_path: Path, dlib_chips: list[np.ndarray]) -> None:
    """dlib's weights through the serving Embedder (its Preprocess: mean, scale, channel order, layout) give dlib's own
    descriptors on dlib's chips: a wrong mean, scale or channel order in what serves would not pass."""
    import_dlib(dlib_models_dir() / DLIB_DAT, tmp_path / "dlib.pt")
    embedder, _ = load_encoder(tmp_path / "dlib.pt", flip=False)
    resnet = dlib.face_recognition_model_v1(str(dlib_models_dir() / DLIB_DAT))
    want = np.stack([np.asarray(resnet.compute_face_descriptor(np.ascontiguousarray(c)), np.float32)
                     for c in dlib_chips])
    want /= np.linalg.norm(want, axis=1, keepdims=True)  # served embeddings are unit vectors
    got = embedder(np.stack(dlib_chips))
    assert np.abs(got - want).max() < 1e-4
    swapped = embedder(np.stack(dlib_chips)[..., ::-1].copy())  # the positive control: BGR is caught
    assert np.abs(swapped - want).max() > 1e-2


def test_imported_checkpoint_serves_dlib_chips(tmp_path: Path, lfw: Path, dlib_chips: list[np.ndarray]) -> None:
    card = import_dlib(dlib_models_dir() / DLIB_DAT, tmp_path / "dlib.pt")
    assert card["training"]["licence"].startswith("CC0")
    embedder, loaded = load_encoder(tmp_path / "dlib.pt", flip=False)
    assert embedder.config.arch == "dlib_resnet_v1" and embedder.config.input_size == 150
    assert loaded["model_version"].startswith("dlib-resnet-v1-")
    # our chip: MTCNN's box + dlib's shape predictor + dlib's get_face_chip, as serving cuts it
    photo = lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    face = central_face(FaceDetector().detect(rgb), rgb.shape[1], rgb.shape[0])
    assert face is not None
    chip = embedder.aligner(rgb, face)
    assert chip.shape == (150, 150, 3)
    again = lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg"
    rgb2 = np.asarray(Image.open(again).convert("RGB"))
    face2 = central_face(FaceDetector().detect(rgb2), rgb2.shape[1], rgb2.shape[0])
    assert face2 is not None
    e = embedder(np.stack([chip, embedder.aligner(rgb2, face2), dlib_chips[-1]]))  # -1: an ORL person
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    same, other = np.linalg.norm(e[0] - e[1]), np.linalg.norm(e[0] - e[2])
    assert same < 0.35 < other, (same, other)


def test_reader_refuses_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "other.dat"
    bad.write_bytes(b"\x01\x02\x01\x04\x01\x01\x01\x01\x01\x01" + np.ones(4, "<f4").tobytes())
    with pytest.raises(CheckpointError, match="not dlib's face ResNet"):
        read_dlib_weights(bad)
    assert dlib_config().chip == "dlib5"


def test_our_chip_matches_dlibs_own(lfw: Path) -> None:
    """Serving cuts dlib's chip from MTCNN's box (dlib's shape predictor inside it): on LFW photos where
    dlib's HOG detector finds the face too, the two chips nearly coincide and embed alike."""
    models = dlib_models_dir()
    hog = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    from model.encoder import torch_embedder

    model = DlibResNet()
    model.load_state_dict(read_dlib_weights(models / DLIB_DAT))
    config = dlib_config()
    model.config = config  # type: ignore[assignment]
    embedder = torch_embedder(model)
    detector = FaceDetector()
    ours, theirs = [], []
    for person in sorted(p for p in lfw.iterdir() if p.is_dir())[100:130]:
        rgb = np.ascontiguousarray(np.asarray(Image.open(next(iter(sorted(person.glob("*.jpg"))))).convert("RGB")))
        boxes = list(hog(rgb, 1))
        face = central_face(detector.detect(rgb), rgb.shape[1], rgb.shape[0])
        if not boxes or face is None:
            continue
        box = min(boxes, key=lambda b: (b.center().x - 125) ** 2 + (b.center().y - 125) ** 2)
        theirs.append(np.asarray(dlib.get_face_chip(rgb, predictor(rgb, box), size=150, padding=0.25)))
        ours.append(embedder.aligner(rgb, face))
    assert len(ours) >= 20
    pixels = np.abs(np.stack(ours).astype(float) - np.stack(theirs).astype(float)).mean(axis=(1, 2, 3))
    dist = np.linalg.norm(embedder(np.stack(ours)) - embedder(np.stack(theirs)), axis=1)
    # same person, same photo: far below the distance between different people (0.4 and more)
    assert np.median(dist) < 0.1 and dist.max() < 0.25, (np.median(dist), dist.max())
    assert np.median(pixels) < 12, np.median(pixels)
