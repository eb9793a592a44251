"""The in-process :class:`~facesearch.client.Client`: the gallery the service would open (the same FACESEARCH_*
settings), answering the command line's calls with the same models the server answers with
(:mod:`facesearch.answers`) and refusing them with the same error kind and code (:mod:`facesearch.errors`), so each
command is written once for both (``facesearch search``, ``verify``, ``enroll``, ``photos index``).

Only the routes those commands send are answered here; any other is refused as a server's own (``--url``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Literal, TypeVar

from facesearch import answers, decisions, enrollment, photos, schemas
from facesearch.client import ApiError, Call, Image, error_for
from facesearch.compose import open_pipeline, open_settings_gallery
from facesearch.errors import describe
from facesearch.settings import Settings
from index.config import gallery_exists
from index.errors import GalleryError, NotFound
from index.gallery import Gallery
from index.records import NewPhoto
from model.pipeline import FacePipeline

M = TypeVar("M")
ACTOR = "cli"  # the audit's actor for what the command line writes
API = "/v1"  # where a stored face's thumbnail would be served (the answers' links)
Need = Literal["existing", "create"]


class LocalFaceSearch:
    """``collection``: None or ``default`` for the deployment's own. ``gallery``: ``existing`` (a command that reads:
    :class:`GalleryError` at once when there is none, rather than creating an empty one), ``create`` (a command
    that writes), or None (verification of two photos: no gallery is opened)."""

    ROUTES = frozenset({"search", "verify", "enroll", "identity", "index_photo", "photo", "live"})

    def __init__(self, settings: Settings, *, collection: str | None = None, gallery: Need | None = "existing"
                 ) -> None:
        self.settings, self.collection = settings, collection
        if gallery == "existing" and not gallery_exists(settings.data_dir, settings.database_url):
            raise GalleryError(f"no gallery in {settings.data_dir} (enroll first, or set --data-dir or "
                               "FACESEARCH_DATA_DIR)")
        self.pipeline: FacePipeline = open_pipeline(settings)
        self._gallery: Gallery | None = None
        self._lock = threading.Lock()
        if gallery is not None:
            try:
                self.gallery  # noqa: B018 (opened now: no such collection is one line before any work)
            except BaseException:
                self.pipeline.close()
                raise

    @property
    def gallery(self) -> Gallery:
        with self._lock:
            if self._gallery is None:
                self._gallery = open_settings_gallery(self.settings, dim=self.pipeline.dim,
                                                      model_version=self.pipeline.model_version,
                                                      collection=self.collection)
            return self._gallery

    def __enter__(self) -> LocalFaceSearch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._gallery is not None:
            self._gallery.close()
        self.pipeline.close()

    def send(self, call: Call[M]) -> M:
        if call.route not in self.ROUTES:
            raise ApiError(501, "not_in_process", f"{call.route or call.path} is answered by a server only (--url)")
        try:
            return getattr(self, call.route)(*call.args, **call.kwargs)
        except Exception as e:
            d = describe(e)
            if d is None:
                raise
            raise error_for(d.status, d.code, d.detail, d.extra) from e

    # --- the routes, as the server answers them ------------------------------------------------------------
    def search(self, image: Image, *, k: int | None = None, threshold: float | None = None,
               max_faces: int | None = None) -> schemas.SearchResponse:
        t0 = time.perf_counter()
        s = self.settings
        analysis = self.pipeline.analyze(_read(image), max_faces=max_faces or s.max_faces)
        thr, found = decisions.search_gallery(self.gallery, self.pipeline.calibration, analysis.faces,
                                              s.search_fpir, threshold, k or 5)
        return answers.search(analysis, thr, found, self.pipeline.model_version, _ms(t0))

    def verify(self, image: Image, other: Image | None = None, *, identity: str | None = None,
               threshold: float | None = None) -> schemas.VerifyResponse:
        t0 = time.perf_counter()
        thr = decisions.verify_threshold(self.pipeline.calibration, threshold)
        if other is not None:
            e1, f1 = answers.verify_face(self.pipeline.analyze(_read(image), max_faces=1), "image1")
            e2, f2 = answers.verify_face(self.pipeline.analyze(_read(other), max_faces=1), "image2")
            verdict, faces = decisions.verify_pair(e1, e2, thr), [f1, f2]
        else:
            assert identity is not None
            if not self.gallery.get_identity(identity).faces:  # before the photo is analysed, as the route
                raise NotFound(f"identity {identity!r} has no faces")
            e, f = answers.verify_face(self.pipeline.analyze(_read(image), max_faces=1), "image")
            verdict, faces = decisions.verify_against(self.gallery, identity, e, thr), [f]
        return answers.verify(verdict, thr, faces, identity, self.pipeline.model_version, _ms(t0))

    def enroll(self, identity: str, *images: Image, metadata: dict[str, Any] | None = None,
               face: enrollment.FaceChoice | None = None) -> schemas.EnrollResponse:
        blobs = [_read(i) for i in images]
        analyses = [self.pipeline.analyze(b, sources=True) for b in blobs]
        chosen = enrollment.choose_faces(analyses, face or "single")
        done = enrollment.enroll(self.gallery, identity, chosen, [enrollment.sha256_of(b) for b in blobs],
                                 metadata=metadata, actor=ACTOR)
        return answers.enrolled(identity, done, self.pipeline.model_version)

    def identity(self, identity: str, *, limit: int = 100, offset: int = 0) -> schemas.IdentityDetail:
        record = self.gallery.get_identity(identity)
        faces, total = self.gallery.list_faces(identity, limit=limit, offset=offset)
        return answers.identity_detail(record, faces, total, API)

    def index_photo(self, image: Image, *, photo_id: str | None = None, album: str | None = None,
                    metadata: dict[str, Any] | None = None) -> schemas.IndexedPhoto:
        if photo_id is None:
            raise ApiError(422, "validation_error", "in process, a photo is indexed under a key of the caller's")
        data = _read(image)
        analysis = self.pipeline.analyze(data, max_faces=self.settings.max_faces, sources=True)
        done = photos.index_photo(self.gallery, self.pipeline.calibration, analysis, data,
                                  NewPhoto(photo_id, album or "", metadata or {}), fpir=self.settings.search_fpir,
                                  actor=ACTOR)
        clusters = {f.id: f.cluster for f in self.gallery.photos.get(photo_id)[1]}
        return answers.indexed_photo(photo_id, album or "", analysis, done, clusters, self.pipeline.model_version)

    def photo(self, photo_id: str) -> schemas.PhotoDetail:
        return answers.photo_detail(*self.gallery.photos.get(photo_id), API)

    def live(self) -> schemas.Health:
        return schemas.Health(status="ok", model=self.pipeline.model_version)


def _read(image: Image) -> bytes:
    return image if isinstance(image, bytes) else Path(image).read_bytes()


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)
