"""Photos, the one path for the API (``/v1/photos``, ``/v1/clusters``) and the command line: index every face of
a photo (each told whether it is someone enrolled), find the photos a person is in, group unnamed faces.

Thresholds come from the model card's calibration, as for identity search: a photo search keeps a stranger's
chance of matching any indexed face at the target FPIR for the number of photos' faces searched; clusters join
faces closer than the distance where one comparison's false-accept rate is ``CLUSTER_FAR``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facesearch import decisions
from facesearch.enrollment import new_face, sha256_of
from index.gallery import Gallery
from index.records import IdentityHit, NewPhoto, PhotoHit
from model.analysis import Analysis, AnalyzedFace
from model.calibration import Calibration

CLUSTER_FAR = 1e-4  # a cluster joins two faces when strangers are that close once in 10,000 comparisons


@dataclass(frozen=True)
class IndexedFace:
    face_id: int
    face: AnalyzedFace
    match: IdentityHit | None  # the enrolled identity it is, under the search threshold


def cluster_threshold(cal: Calibration) -> float:
    return cal.threshold_for_far(CLUSTER_FAR)


def index_photo(gallery: Gallery, cal: Calibration, analysis: Analysis, data: bytes, photo: NewPhoto, *,
                fpir: float, actor: str | None = None) -> list[IndexedFace]:
    """Store the photo with every analysed face (unnamed; clustered) and say who each face is, if anyone."""
    faces = analysis.faces
    _, found = decisions.search_gallery(gallery, cal, faces, fpir, None, k=1)
    sha = sha256_of(data)
    photo = NewPhoto(photo.key, photo.album, photo.metadata, analysis.width, analysis.height)
    ids = gallery.photos.add(photo, [(None, new_face(f, sha)) for f in faces], cluster_within=cluster_threshold(cal),
                             actor=actor)
    return [IndexedFace(i, f, d.match) for i, f, d in zip(ids, faces, found, strict=True)]


def find_photos(gallery: Gallery, cal: Calibration, queries: np.ndarray, *, fpir: float,
                requested: float | None = None, album: str | None = None, limit: int = 100, expand: bool = False
                ) -> tuple[list[PhotoHit], decisions.Threshold]:
    """The photos holding the person of ``queries`` (one selfie face, or an identity's faces), best first;
    ``expand``: and those two of the faces found vouch for (more photos, lower precision: bench/photos.py)."""
    thr = decisions.search_threshold(cal, gallery.photos.searchable_faces, fpir, requested)
    return gallery.photos.search(queries, thr.distance, album=album, limit=limit, expand=expand), thr
