"""Settings -> a face pipeline and a gallery: the one place that does it, for the service and every CLI command
(the benches that run the service go through it too), so that each reads the same FACESEARCH_* variables the same
way."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from facesearch.settings import Settings
from index.config import GalleryConfig, open_gallery

if TYPE_CHECKING:
    from index.gallery import Gallery
    from model.pipeline import FacePipeline


def open_pipeline(settings: Settings, *, on_batch: Any = None) -> FacePipeline:
    """The encoder (``FACESEARCH_CHECKPOINT``), detector and batcher as the service runs them."""
    from model.pipeline import FacePipeline  # torch is loaded only by commands that embed

    s = settings
    return FacePipeline(checkpoint=s.checkpoint, min_face_size=s.min_face_size, detect_max_side=s.detect_max_side,
                        max_pixels=s.max_pixels, threads=s.torch_threads, max_batch=s.max_batch,
                        batch_wait_ms=s.batch_wait_ms, on_batch=on_batch, runtime=s.runtime,
                        photo_workers=s.photo_workers, photo_timeout=s.photo_timeout or None)


def gallery_config(settings: Settings, *, dim: int, model_version: str, allow_mismatch: bool = False
                   ) -> GalleryConfig:
    s = settings
    return GalleryConfig(folder=s.data_dir, dim=dim, model_version=model_version, kind=s.index_kind,
                         allow_mismatch=allow_mismatch, database_url=s.database_url, pool_size=s.workers + 2,
                         vector_url=s.vector_url, milvus_index=s.milvus_index)


def open_settings_gallery(settings: Settings, *, dim: int, model_version: str, allow_mismatch: bool = False,
                          collection: str | None = None) -> Gallery:
    """The gallery of ``collection`` (None: ``default``, the deployment's own); NotFound for no such collection."""
    config = gallery_config(settings, dim=dim, model_version=model_version, allow_mismatch=allow_mismatch)
    if collection:
        from index.collections import open_collection

        return open_collection(config, collection)
    return open_gallery(config)
