"""Decode untrusted image bytes into an RGB array, safely."""

from __future__ import annotations

import io
import re
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model.errors import ImageTooLarge, InvalidImage, UnsupportedImageType

ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO", "PPM"})

CORRUPT = "the image data is corrupt or truncated"

# Magic numbers of common non-image files, so a zip or PDF gets 415 rather than 400.
_NON_IMAGE_MAGIC = (b"PK\x03\x04", b"%PDF", b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!", b"\x7fELF")


def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode bytes to an RGB uint8 array of shape (H, W, 3) with EXIF orientation applied.

    Greyscale, palette, CMYK, 16-bit and alpha images are converted; animated images give their
    first frame. Raises InvalidImage, UnsupportedImageType or ImageTooLarge.
    """
    if not data:
        raise InvalidImage("empty upload")
    if data.startswith(_NON_IMAGE_MAGIC):
        raise UnsupportedImageType("not an image format")
    try:
        with warnings.catch_warnings():
            # our limit, not Pillow's: its warning (and error, at twice its own limit) would speak of its number
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            if img.format not in ACCEPTED_FORMATS:
                raise UnsupportedImageType(f"unsupported image format {img.format}")
            w, h = img.size
            if w < 1 or h < 1:
                raise InvalidImage("image has no pixels")
            if w * h > max_pixels:
                raise ImageTooLarge(too_large(w * h, max_pixels, f"{w}x{h}"))
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img) or img
            rgb = _to_rgb(img)
    except (ImageTooLarge, UnsupportedImageType, InvalidImage):
        raise
    except Image.DecompressionBombError as e:  # beyond twice Pillow's limit: it refuses before we see the size
        found = re.search(r"\((\d+) pixels\)", str(e))
        raise ImageTooLarge(too_large(int(found.group(1)) if found else None, max_pixels)) from e
    except UnidentifiedImageError as e:
        raise InvalidImage("not a recognised image") from e
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError, ZeroDivisionError,
            MemoryError, AttributeError, struct.error) as e:
        raise InvalidImage(CORRUPT) from e
    return rgb


def too_large(pixels: int | None, limit: int, size: str | None = None) -> str:
    """The one message for an image over the pixel limit (FACESEARCH_MAX_PIXELS)."""
    what = f"{size} = {pixels:,} pixels" if size and pixels else f"{pixels:,} pixels" if pixels else "too many pixels"
    return f"image has {what}; the limit is {limit:,} pixels"


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = ((arr - lo) / (hi - lo) * 255.0) if hi > lo else np.zeros_like(arr)
        grey = scaled.astype(np.uint8)
        return np.ascontiguousarray(np.stack([grey] * 3, axis=-1))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
