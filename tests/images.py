"""Hostile and unusual image bytes, generated in the tests (no committed binaries)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from typing import Any

from PIL import Image


def encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h pixels (the data is a few bytes)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 99))
            + png_chunk(b"IEND", b""))


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "hello" * 100)
    return buf.getvalue()


def gif_animated(size: int = 64) -> bytes:
    """Red, green, blue frames."""
    frames = [Image.new("RGB", (size, size), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0)
