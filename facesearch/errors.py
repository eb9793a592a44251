"""What goes wrong, in one table for the API and the command line's in-process client: each exception the use
cases, ``model/`` and ``index/`` raise, with the status and the stable code the API answers it with
(``{"detail": ..., "code": ..., **extra}``). :func:`describe` reads an exception through the table; ``app/errors.py``
answers with it, :mod:`facesearch.local` raises the client library's error of that status from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from index.errors import Conflict, GalleryMismatch, InvalidKey, InvalidVector, NotFound, StoreUnavailable
from model.errors import AnalysisTimeout, ImageTooLarge, InvalidImage, UnsupportedImageType

# Messages are constants so tests can assert them.
NO_FACE = "no face found in the image"
MULTIPLE_FACES = ("the image holds several faces of similar size, so whose face to enroll is ambiguous; send "
                  "face=largest to enroll the largest")
STORE_UNAVAILABLE = "the gallery's database is unavailable; retry later"
RETRY_AFTER_S = 5


class Refusal(Exception):
    """A request understood and not carried out: its ``code``, one-sentence ``detail`` and the answer's ``extra``
    fields (which photo, which boxes)."""

    status = 422

    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.code, self.detail, self.extra = code, detail, extra


class NoFace(Refusal):
    def __init__(self, **extra: Any) -> None:
        super().__init__("no_face", NO_FACE, **extra)


class AmbiguousSubject(Refusal):
    """Faces of similar size in a photo to enroll, and ``face=single``."""

    def __init__(self, **extra: Any) -> None:
        super().__init__("multiple_faces", MULTIPLE_FACES, **extra)


@dataclass(frozen=True)
class Described:
    status: int
    code: str
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)
    retry_after: int | None = None  # seconds, for a 503


TABLE: list[tuple[type[Exception], int, str]] = [
    (InvalidImage, 400, "invalid_image"),
    (UnsupportedImageType, 415, "unsupported_media_type"),
    (ImageTooLarge, 413, "too_large"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (InvalidKey, 422, "invalid_identity"),
    (InvalidVector, 422, "invalid_vector"),
    (GalleryMismatch, 409, "gallery_mismatch"),
    (AnalysisTimeout, 503, "timeout"),
    (StoreUnavailable, 503, "store_unavailable"),
]
HANDLED: tuple[type[Exception], ...] = (Refusal, *(exc for exc, _, _ in TABLE))


def describe(e: Exception) -> Described | None:
    """The answer to ``e`` (None: not a request's fault nor a passing condition: a 500)."""
    if isinstance(e, Refusal):
        return Described(e.status, e.code, e.detail, e.extra)
    for exc, status, code in TABLE:
        if isinstance(e, exc):
            detail = STORE_UNAVAILABLE if isinstance(e, StoreUnavailable) else str(e)
            return Described(status, code, detail, retry_after=RETRY_AFTER_S if status == 503 else None)
    return None
