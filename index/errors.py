"""Plain exceptions of the gallery; the HTTP layer maps them to status codes."""


class GalleryError(Exception):
    """Base class."""


class NotFound(GalleryError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its argument
        return str(self.args[0]) if self.args else "not found"


class Conflict(GalleryError):
    """E.g. renaming an identity to a key that exists."""


class InvalidKey(GalleryError, ValueError):
    """Identity keys are 1-128 printable characters."""


class InvalidVector(GalleryError, ValueError):
    """Wrong dimension, NaN or inf."""


class GalleryMismatch(GalleryError):
    """The store was written by a different embedding size or model version."""


class StoreUnavailable(GalleryError):
    """The store cannot be reached now (PostgreSQL down or restarting); the request may be retried."""
