"""Enrollment, the one path for the API (``POST /v1/identities/{identity}/faces``) and ``facesearch enroll``:
pick the face of each analysed photo, warn about what makes it a poor reference, and add the faces with their
chip, source crop (so a later encoder can re-embed them) and an audit actor, all or none."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from facesearch import decisions
from facesearch.errors import AmbiguousSubject, NoFace
from index.errors import NotFound
from index.gallery import Gallery
from index.records import NewFace
from model.analysis import Analysis, AnalyzedFace

NEAR_DUPLICATE_DISTANCE = 0.25
FaceChoice = Literal["single", "largest"]
# A photo with several faces enrolls its largest without being asked when that face is this many times the size of
# the next (the subject, with someone in the background): on LFW outside folds 1-2 (YuNet), the smallest ratio at
# which no photo's largest face was someone other than its subject (bench/subject.py, docs/figures.md).
SUBJECT_RATIO = 1.3


@dataclass(frozen=True)
class Enrolled:
    face_id: int
    sha256: str
    warnings: list[str]
    face: AnalyzedFace


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def clear_subject(a: Analysis) -> bool:
    """Whether the photo's largest face is clearly its subject: the only one, or :data:`SUBJECT_RATIO` times the
    size of the next."""
    return len(a.faces) < 2 or a.faces[0].face.size >= SUBJECT_RATIO * a.faces[1].face.size


def choose_faces(analyses: Sequence[Analysis], face: FaceChoice) -> list[AnalyzedFace]:
    """The face each photo enrolls (its largest); raises :class:`NoFace` for a photo with none, or, when ``face``
    is ``single``, :class:`AmbiguousSubject` for one with faces of similar size (each naming the photo's index).
    ``analyses`` must come from ``FacePipeline.analyze(..., sources=True)``."""
    chosen = []
    for i, a in enumerate(analyses):
        if not a.faces:
            raise NoFace(file_index=i)
        if face == "single" and not clear_subject(a):
            raise AmbiguousSubject(file_index=i, boxes=[[round(float(x), 2) for x in f.face.box] for f in a.faces])
        chosen.append(a.faces[0])
    return chosen


def enroll(gallery: Gallery, identity: str, faces: Sequence[AnalyzedFace], shas: Sequence[str], *,
           metadata: dict[str, Any] | None = None, actor: str | None = None) -> list[Enrolled]:
    """Add the faces to ``identity`` in one transaction; each comes back with its id and warnings."""
    warnings = [enrollment_warnings(gallery, identity, f, s) for f, s in zip(faces, shas, strict=True)]
    ids = gallery.add_many([(identity, new_face(f, s)) for f, s in zip(faces, shas, strict=True)],
                           metadata={identity: metadata} if metadata is not None else None, actor=actor)
    return [Enrolled(i, s, w, f) for i, s, w, f in zip(ids, shas, warnings, faces, strict=True)]


def new_face(f: AnalyzedFace, sha256: str) -> NewFace:
    assert f.embedding is not None
    return NewFace(embedding=f.embedding, box=[float(x) for x in f.face.box], score=f.face.score, sha256=sha256,
                   thumbnail=f.thumbnail_jpeg(), source=f.source_image(), source_geometry=f.source_geometry)


def enrollment_warnings(gallery: Gallery, identity: str, f: AnalyzedFace, sha256: str) -> list[str]:
    warnings = decisions.low_quality(f.quality)
    for dup in gallery.faces_with_sha256(sha256):
        warnings.append(f"the same image is already enrolled as face {dup.id} of identity {dup.identity!r}"
                        if dup.identity is not None else f"the same image is already stored as photo {dup.photo!r}")
    assert f.embedding is not None
    res = gallery.search(f.embedding[None, :], k=5)[0]
    own = next((h for h in res.identities if h.identity == identity), None)
    if res.faces and res.faces[0].distance < NEAR_DUPLICATE_DISTANCE:
        near = res.faces[0]
        warnings.append(f"near-duplicate of face {near.face_id} of identity {near.identity!r} "
                        f"(distance {near.distance:.3f})")
    other = next((h for h in res.identities if h.identity != identity), None)
    if other is not None and (own is None and _has_faces(gallery, identity) or own is not None
                              and other.distance < own.distance):
        warnings.append(f"this face is closer to identity {other.identity!r} (distance {other.distance:.3f}) "
                        f"than to the identity's own faces")
    return warnings


def _has_faces(gallery: Gallery, identity: str) -> bool:
    try:
        return gallery.get_identity(identity).faces > 0
    except NotFound:
        return False
