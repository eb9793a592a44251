"""What indexing one photo costs and where, in process, one photo at a time: analysis (decode, detect, align, cut
and losslessly encode each face's source crop: the photo workers; embed: the encoder), the write (the store's
transaction, the identity lookup and the cluster join) and reading the photo back as the API answers; and what the
source crop's lossless WebP encoding costs per face at each ``method:quality`` setting.

    python bench/photo_cost.py [--photos 20] [--webp 0:0,0:80] [--rounds 2] [--json PATH]

Group photos of three LFW people side by side (people 500 on, in name order), into an empty gallery each round.
``--webp``: the source crops of the round's faces encoded again at each setting, alternated, timed per face (the
shipped one is ``model.analysis.encode_source``'s). Milliseconds.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import command, group_photo, machine  # noqa: E402
from bench.photos_scale import LFW  # noqa: E402


def one_round(groups: list[bytes], webp: list[tuple[int, int]]) -> dict[str, float]:
    import numpy as np
    from PIL import Image

    from facesearch import photos
    from facesearch.compose import open_pipeline, open_settings_gallery
    from facesearch.settings import Settings
    from index.records import NewPhoto

    spent = {"analyze_ms": 0.0, "write_ms": 0.0, "read_back_ms": 0.0}
    s = Settings(data_dir=Path(tempfile.mkdtemp(prefix="fs-photo-cost-")))
    pipeline = open_pipeline(s)
    gallery = open_settings_gallery(s, dim=pipeline.dim, model_version=pipeline.model_version)
    faces, sources = 0, []
    try:
        for n, data in enumerate(groups):
            t = time.perf_counter()
            analysis = pipeline.analyze(data, max_faces=s.max_faces, sources=True)
            spent["analyze_ms"] += time.perf_counter() - t
            sources += [np.asarray(Image.open(io.BytesIO(f.source))) for f in analysis.faces if f.source]
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
    out = {k: round(v / len(groups) * 1000, 1) for k, v in spent.items()}
    out["total_ms"] = round(out["analyze_ms"] + out["write_ms"] + out["read_back_ms"], 1)
    out["faces_per_photo"] = round(faces / len(groups), 2)
    for method, quality in webp:
        t, size = time.perf_counter(), 0
        for rgb in sources:
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="WEBP", lossless=True, method=method, quality=quality)
            size += buf.tell()
        out[f"webp_{method}_{quality}_ms_per_face"] = round((time.perf_counter() - t) / len(sources) * 1000, 2)
        out[f"webp_{method}_{quality}_bytes_per_face"] = size // len(sources)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=20)
    p.add_argument("--webp", default="0:0,0:80", help="lossless WebP method:quality settings, alternated")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    ran = machine()  # the commit as the run starts
    names = sorted(d.name for d in LFW.iterdir() if d.is_dir())[500 : 500 + 3 * a.photos]
    groups = [group_photo([LFW / n / f"{n}_0001.jpg" for n in names[k : k + 3]]) for k in range(0, len(names), 3)]
    webp = [(int(m), int(q)) for m, q in (x.split(":") for x in a.webp.split(","))]
    rows = []
    for r in range(a.rounds):
        rows.append({"round": r, **one_round(groups, webp if r % 2 == 0 else webp[::-1])})
        print(json.dumps(rows[-1]), flush=True)
    out = {"command": command(), **ran, "photos": len(groups), "rows": rows}
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
