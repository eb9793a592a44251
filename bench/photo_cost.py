"""What indexing one photo costs and where, in process, one photo at a time: analysis (decode, detect, align, embed;
the photo workers and the encoder), the write (each face's chip and lossless source crop encoded, the store's
transaction, the identity lookup and the cluster join) and reading the photo back as the API answers.

    python bench/photo_cost.py [--photos 20] [--webp 0:0,0:80] [--json PATH]

Group photos of three LFW people side by side (people 500 on, in name order), into an empty gallery each round;
``--webp``: the source crop's lossless WebP ``method:quality`` (effort) settings, alternated in each round (the
shipped one is ``model.analysis.AnalyzedFace.source_image``'s), to measure what the encoding costs. Milliseconds per
photo.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import command, group_photo, machine  # noqa: E402
from bench.photos_scale import LFW  # noqa: E402


def one_round(groups: list[bytes], webp_method: int, webp_quality: int) -> dict[str, float]:
    import io

    from PIL import Image

    from facesearch import enrollment, photos
    from facesearch.compose import open_pipeline, open_settings_gallery
    from facesearch.settings import Settings
    from index.records import NewPhoto
    from model.analysis import AnalyzedFace

    def source_image(self: AnalyzedFace) -> bytes | None:
        if self.source is None:
            return None
        buf = io.BytesIO()
        Image.fromarray(self.source).save(buf, format="WEBP", lossless=True, method=webp_method,
                                          quality=webp_quality)
        return buf.getvalue()

    shipped_source, shipped_new_face = AnalyzedFace.source_image, photos.new_face
    spent = {"analyze_ms": 0.0, "write_ms": 0.0, "of_which_crop_encoding_ms": 0.0, "read_back_ms": 0.0}

    def timed_new_face(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = enrollment.new_face(*args, **kwargs)
        spent["of_which_crop_encoding_ms"] += time.perf_counter() - t
        return out

    AnalyzedFace.source_image = source_image  # type: ignore[method-assign]
    photos.new_face = timed_new_face
    s = Settings(data_dir=Path(tempfile.mkdtemp(prefix="fs-photo-cost-")))
    pipeline = open_pipeline(s)
    gallery = open_settings_gallery(s, dim=pipeline.dim, model_version=pipeline.model_version)
    faces = 0
    try:
        for n, data in enumerate(groups):
            t = time.perf_counter()
            analysis = pipeline.analyze(data, max_faces=s.max_faces, sources=True)
            spent["analyze_ms"] += time.perf_counter() - t
            t = time.perf_counter()
            faces += len(photos.index_photo(gallery, pipeline.calibration, analysis, data, NewPhoto(f"p{n}"),
                                            fpir=s.search_fpir))
            spent["write_ms"] += time.perf_counter() - t
            t = time.perf_counter()
            gallery.photos.get(f"p{n}")
            spent["read_back_ms"] += time.perf_counter() - t
    finally:
        gallery.close()
        pipeline.close()
        AnalyzedFace.source_image, photos.new_face = shipped_source, shipped_new_face  # type: ignore[method-assign]
    out = {k: round(v / len(groups) * 1000, 1) for k, v in spent.items()}
    out["total_ms"] = round(out["analyze_ms"] + out["write_ms"] + out["read_back_ms"], 1)
    out["faces_per_photo"] = round(faces / len(groups), 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=20)
    p.add_argument("--webp", default="0:0,0:80", help="lossless WebP method:quality settings, alternated")
    p.add_argument("--rounds", type=int, default=2, help="rounds, each running every setting")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    ran = machine()  # the commit as the run starts
    names = sorted(d.name for d in LFW.iterdir() if d.is_dir())[500 : 500 + 3 * a.photos]
    groups = [group_photo([LFW / n / f"{n}_0001.jpg" for n in names[k : k + 3]]) for k in range(0, len(names), 3)]
    settings = [tuple(int(x) for x in s.split(":")) for s in a.webp.split(",")]
    rows = []
    for r in range(a.rounds):
        for m, q in settings:
            rows.append({"round": r, "webp_method": m, "webp_quality": q, **one_round(groups, m, q)})
            print(json.dumps(rows[-1]), flush=True)
    out = {"command": command(), **ran, "photos": len(groups), "rows": rows}
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
