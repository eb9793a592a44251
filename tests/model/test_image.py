"""Decoding untrusted bytes: every bad input is a typed error, never a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.errors import ImageTooLarge, InvalidImage, UnsupportedImageType
from model.image import decode_image
from tests.images import encode, gif_animated, png_claiming, zip_bytes

LIMIT = 40_000_000


@pytest.mark.parametrize("mode,fmt", [("RGB", "JPEG"), ("L", "PNG"), ("RGBA", "PNG"), ("P", "GIF"),
                                      ("CMYK", "JPEG"), ("I;16", "PNG"), ("RGB", "WEBP"), ("RGB", "BMP"),
                                      ("RGB", "TIFF"), ("LA", "PNG"), ("1", "PNG")])
def test_formats_and_modes_become_rgb(mode: str, fmt: str) -> None:
    img = Image.new(mode, (30, 20))
    out = decode_image(encode(img, fmt), max_pixels=LIMIT)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8


def _face(lfw: Path) -> Image.Image:
    """A real photo, cropped off-centre so that every rotation and mirror of it differs."""
    return Image.open(lfw / "Colin_Powell" / "Colin_Powell_0001.jpg").convert("RGB").crop((30, 10, 250, 200))


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


@pytest.mark.parametrize("orientation,turn", [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_turns_the_right_way(lfw: Path, orientation: int, turn: int) -> None:
    img = _face(lfw)
    exif = Image.Exif()
    exif[0x0112] = orientation  # 3: upside down, 6: display turned 90 degrees clockwise, 8: anticlockwise
    out = decode_image(encode(img, "JPEG", quality=95, exif=exif.tobytes()), max_pixels=LIMIT)
    want = np.rot90(np.asarray(img), k=turn)  # np.rot90 turns anticlockwise for k > 0
    assert out.shape == want.shape
    wrong = [np.rot90(np.asarray(img), k=k) for k in (0, 1, 2, 3) if k % 4 != turn % 4]
    assert _diff(out, want) < 4.0  # JPEG noise only
    assert all(_diff(out, w) > 20.0 for w in wrong if w.shape == out.shape)


def test_cmyk_jpeg_keeps_its_colours(lfw: Path) -> None:
    img = _face(lfw)
    out = decode_image(encode(img.convert("CMYK"), "JPEG", quality=95), max_pixels=LIMIT)
    assert _diff(out, np.asarray(img)) < 6.0  # an inverted or channel-swapped decode is off by 50-150


def test_sixteen_bit_png_keeps_its_tones(lfw: Path) -> None:
    grey = np.asarray(_face(lfw).convert("L"))
    sixteen = Image.fromarray(grey.astype(np.uint16) * 257)  # uint16: mode I;16, the full 16-bit range
    out = decode_image(encode(sixteen, "PNG"), max_pixels=LIMIT)
    assert out.shape == (*grey.shape, 3)
    # a decode that kept the low byte of each value would be noise; this one is the photo, stretched
    assert np.corrcoef(out[..., 0].ravel(), grey.ravel())[0, 1] > 0.999


def test_animated_gif_gives_first_frame() -> None:
    out = decode_image(gif_animated(10), max_pixels=LIMIT)
    assert out[0, 0, 0] > 200 and out[0, 0, 2] < 50


@pytest.mark.parametrize("data", [b"", b"hello", b"<html></html>", b"\xff\xd8\xff\xe0" + b"\x00" * 10,
                                  png_claiming(10, 10)])
def test_garbage_is_invalid(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        decode_image(data, max_pixels=LIMIT)


def test_truncated_jpeg_is_invalid() -> None:
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(InvalidImage):
        decode_image(data[: len(data) // 3], max_pixels=LIMIT)


def test_decompression_bomb_is_too_large() -> None:
    with pytest.raises(ImageTooLarge):
        decode_image(png_claiming(50_000, 50_000), max_pixels=LIMIT)


def test_zip_is_unsupported() -> None:
    with pytest.raises(UnsupportedImageType):
        decode_image(zip_bytes(), max_pixels=LIMIT)
