"""Plain exceptions of the face pipeline; the HTTP layer maps them to status codes."""


class ImageError(ValueError):
    """Base class for problems with an input image."""


class InvalidImage(ImageError):
    """The bytes are not a decodable image (empty, truncated, corrupt, not an image)."""


class UnsupportedImageType(ImageError):
    """A real file, but not an image format we accept (e.g. a zip, a PDF)."""


class ImageTooLarge(ImageError):
    """Too many bytes or too many pixels (decompression bombs)."""


class AnalysisTimeout(RuntimeError):
    """A photo's analysis did not finish in the time allowed (FACESEARCH_PHOTO_TIMEOUT): its worker was replaced."""


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or of an unknown format."""
