"""Service settings, read from FACESEARCH_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _cores() -> int:
    return max(1, os.cpu_count() or 1)


# Measured with ONNX Runtime running MTCNN and the encoder (`python bench/threads.py`, docs/figures.md): on 2 cores
# 1 thread per network call and 4 request threads served 25.9 photos/s at concurrency 8, 2 threads 20.1-21.5, 8
# request threads 20.6; search p50 56.6-62.0 ms for all. So few threads per call and more request workers.
# A call that finds no other request computing runs on every core (model.onnx_runtime: a lone search is faster).
def _default_torch_threads() -> int:
    return max(1, _cores() // 4)


def _default_workers() -> int:
    return min(64, max(2, 2 * _cores()))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACESEARCH_", extra="ignore")

    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Comma-separated list in the environment; empty means auth off (and loopback only).
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # open mode answers only requests addressed to a loopback name or address, and these (comma-separated)
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # browser apps on these origins may call the API with a key (CORS; comma-separated; open mode allows none)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    rate_limit: float | None = Field(None, gt=0, le=100_000,
                                     description="requests per second each API key may make on average (bursts of as "
                                     "many); beyond, 429 rate_limited with Retry-After (unset: no limit)")
    metrics_public: bool = Field(False, description="/metrics without a key (default: the API keys protect it)")
    max_upload_mb: float = Field(10.0, gt=0, le=200)
    max_body_mb: float = Field(100.0, gt=0, le=10_000,
                               description="a request's whole body; refused with 413 as soon as it is passed, while "
                               "it streams (each photo in it is held to max_upload_mb too)")
    max_pixels: int = Field(40_000_000, gt=0, description="Decoded pixel limit (decompression bombs).")
    detect_max_side: int = Field(1024, ge=160, description="Photos are downscaled to this for detection.")
    min_face_size: int = Field(20, ge=10)
    max_faces: int = Field(20, ge=1, le=100)
    checkpoint: Path | None = Field(
        None, description="Encoder checkpoint (.pt; its graph beside it, .onnx, serves it without torch) or graph "
        "(.onnx); default: the shipped weights")
    index_kind: Literal["exact", "hnsw"] = "exact"
    runtime: Literal["onnx", "torch"] = Field(
        "onnx", description="what runs the encoder: ONNX Runtime (the exported graph; faster on CPU, "
        "bench/encoder.py) or PyTorch (needs the train extra)")
    search_fpir: float = Field(0.01, gt=0, lt=1)
    torch_threads: int = Field(default_factory=_default_torch_threads, ge=1,
                               description="threads inside each network call (MTCNN's, the encoder's) while "
                               "others compute; with ONNX Runtime a call alone on the machine uses every core")
    workers: int = Field(default_factory=_default_workers, ge=1, le=64,
                         description="request threads: each hands its photo to a photo worker, then embeds, searches")
    photo_workers: int = Field(default_factory=lambda data: max(1, _cores() // data["torch_threads"]), ge=1, le=64,
                               description="processes decoding photos, detecting and aligning faces; "
                               "default: cores / torch_threads, so that workers x threads per call = cores")
    max_waiting: int = Field(64, ge=0, le=100_000,
                             description="requests that may wait for a request thread; beyond, 503 busy with "
                             "Retry-After at once (0: none wait)")
    photo_timeout: float = Field(30.0, ge=0, le=3600,
                                 description="seconds a photo's analysis may take (and wait for a photo worker); a "
                                 "worker past it is killed and replaced and the request answers 503 (0: no limit)")
    batch_wait_ms: float = Field(3.0, ge=0, le=100)
    max_batch: int = Field(64, ge=1, le=1024)
    database_url: str | None = Field(
        None, description="postgresql://... : PostgreSQL holds the gallery, shared by any number of replicas; "
        "unset: SQLite under data_dir")
    vector_url: str | None = Field(
        None, description="a Milvus server (http://host:19530) or a local file (Milvus Lite) that holds the vectors, "
        "one collection shared by every replica; unset: FAISS in this process")
    milvus_index: Literal["FLAT", "HNSW"] = Field("FLAT", description="the Milvus collection's index type")
    unassigned_retention_days: float | None = Field(
        None, gt=0, description="photos' faces that nobody has named are erased this many days after they were "
        "indexed (checked every minute; audited as 'retention'); unset: kept until deleted")
    audit_retention_days: float | None = Field(
        None, gt=0, description="audit entries are dropped this many days after they were written (checked every "
        "minute); unset: kept")
    reembed: Literal["off", "auto"] = Field(
        "off", description="auto: a gallery made by another model is re-embedded from its stored crops at start-up, "
        "before /health/ready turns 200; off: the service refuses to start on it")

    @field_validator("api_keys", "allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def _split_keys(cls, v: object) -> object:
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
