"""Subject access: everything stored about a person's faces, as a zip streamed while it is read (an identity's,
``GET /v1/identities/{identity}/export``, or a cluster of unnamed faces', ``GET /v1/clusters/{id}/export``)."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi.responses import StreamingResponse

ABOUT = ("source.webp: the face with context as stored, lossless (landmarks and box in source_geometry, in its "
         "pixels); chip.jpg: the aligned crop the model embedded; face.json: the embedding too")


class _ZipSink(io.RawIOBase):
    """A write-only stream that hands what zipfile wrote to the response chunk by chunk."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self._chunks.append(data)
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def drain(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


def zip_response(faces: Iterable[dict[str, Any]], summary_name: str, summary: dict[str, Any],
                 filename: str) -> StreamingResponse:
    """``faces/<id>/face.json`` (+ ``source.webp``, ``chip.jpg``) per face, then ``summary_name``: ``summary``
    with every face's record (without its embedding), the time of the export and what the files are."""

    def stream() -> Iterator[bytes]:
        sink = _ZipSink()
        records: list[dict[str, Any]] = []
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for f in faces:
                name = f"faces/{f['face_id']}"
                files = {}
                for kind, ext in (("source", "webp"), ("chip", "jpg")):
                    blob = f.pop(kind)
                    if blob is not None:
                        z.writestr(f"{name}/{kind}.{ext}", blob)
                        files[kind] = f"{name}/{kind}.{ext}"
                f["files"] = files
                z.writestr(f"{name}/face.json", json.dumps(f, indent=1))
                records.append({k: v for k, v in f.items() if k != "embedding"})
                yield sink.drain()
            z.writestr(summary_name, json.dumps({**summary, "exported_at": time.time(), "faces": records,
                                                 "about": ABOUT}, indent=1))
        yield sink.drain()

    return StreamingResponse(stream(), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})
