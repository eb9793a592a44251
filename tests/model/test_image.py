"""Decoding untrusted bytes: every bad input is a typed error, never a crash."""

from __future__ import annotations

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


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    out = decode_image(encode(img, "JPEG", exif=exif.tobytes()), max_pixels=LIMIT)
    assert out.shape == (40, 20, 3)


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
