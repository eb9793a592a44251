"""Every figure README.md, docs/figures.md and docs/model-card.md publish from a results file: made by one command,
rendered, checked.

    python bench/figures.py                 # run every registered bench at this commit (a clean tree), then render
    python bench/figures.py --only NAME     # one results file's bench (NAME: its file name under bench/results/)
    python bench/figures.py --quick         # every bench at CI size into a temporary folder: it runs, nothing published
    python bench/figures.py --render        # rewrite the published numbers from the results files
    python bench/figures.py --check         # exit 1 if a published number differs from its file, or a file is older
                                            # than the code its bench measures

A published number is written between markers that name its file, the value's path in it and its format:
``<!--f openset-v3-celeba.json strangers_accepted .2%-->1.23%<!--/f-->`` (the markers do not show once rendered).
A path is keys and list indexes joined by dots; ``rows[set=lfw folds 1-2].found`` picks the row whose ``set`` is that,
``[dlib_whispers_0.5]`` is a key with a dot in it.
Formats are Python's (``.3f``, ``.2%``, ``,d``, ``,.0f``). The data sets the benches read are found beside the
project (``../shared/datasets``, ``../celeba-more``, ``../cfp``; README "Train and evaluate" says how to make them).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PUBLISHED = [ROOT / "README.md", ROOT / "docs" / "figures.md", ROOT / "docs" / "model-card.md"]
MARK = re.compile(r"<!--f (?P<file>\S+) (?P<path>.+?) (?P<fmt>\S+?)-->(?P<value>.*?)<!--/f-->")
CELEBA = "../celeba-more/img_align_celeba"
LFW = "../shared/datasets/lfw"
CFP = "../cfp/cfp-dataset"
# what the accuracy of every served answer depends on: the shipped graphs and card, and the code that runs them
# (git pathspecs)
SERVED_MODEL = ["model", ":(exclude)model/train", "facesearch/decisions.py"]


@dataclass(frozen=True)
class Figure:
    """One results file: the command that makes it (run from the project's root), a CI-sized variant (``{out}``:
    where it writes), and the code it measures (a change there since the file's commit makes it stale)."""

    command: str
    quick: str | None
    measures: tuple[str, ...]


# encoder v2, the last release before v3, for the side-by-side rows: its graph, checkpoint and card as shipped
V2_COMMIT = "17ecd41"
V2 = "cache/v2/encoder.pt"
SERVING_CODE = [*SERVED_MODEL, ":(exclude)model/weights"]

# the held-out CelebA people bench/openset.py and bench/photos.py measure on, and what picks them
CELEBA_PEOPLE = ("bench/celeba_heldout.txt", "bench/celeba_calibration.txt", "bench/celeba_heldout_trained.txt",
                 "bench/common.py")

# what a request's speed depends on: everything the service runs (git pathspecs)
SERVICE = ("app", "facesearch", "index", *SERVED_MODEL, "bench/photos_scale.py", "pyproject.toml")

FIGURES: dict[str, Figure] = {
    "cfp-v3.json": Figure(
        f"facesearch evaluate-cfp --root {CFP} --splits 9-10 --reference dlib --json bench/results/cfp-v3.json",
        None,
        (*SERVED_MODEL, "model/train/cfp.py")),
    "cfp-v2-same-commit.json": Figure(
        f"facesearch evaluate-cfp --root {CFP} --splits 9-10 --checkpoint {V2} "
        "--json bench/results/cfp-v2-same-commit.json",
        None,
        (*SERVING_CODE, "model/train/cfp.py")),
    "openset-v3-celeba.json": Figure(
        f"python bench/openset.py --celeba {CELEBA} --json bench/results/openset-v3-celeba.json",
        f"python bench/openset.py --celeba {CELEBA} --people 20 --no-dlib --json {{out}}",
        (*SERVED_MODEL, "bench/openset.py", *CELEBA_PEOPLE)),
    "openset-v2-celeba300.json": Figure(
        f"python bench/openset.py --celeba {CELEBA} --checkpoint {V2} --no-dlib "
        "--json bench/results/openset-v2-celeba300.json",
        None,
        (*SERVING_CODE, "bench/openset.py", *CELEBA_PEOPLE)),
    "photos-find-v3-celeba.json": Figure(
        f"python bench/photos.py --find --lfw {LFW} --celeba {CELEBA} --cfp {CFP} "
        "--json bench/results/photos-find-v3-celeba.json",
        None,
        (*SERVED_MODEL, "facesearch/photos.py", "index/photos.py", "bench/photos.py", *CELEBA_PEOPLE)),
    "photos-clusters-v3-celeba.json": Figure(
        f"python bench/photos.py --lfw {LFW} --celeba {CELEBA} --json bench/results/photos-clusters-v3-celeba.json",
        None,
        (*SERVED_MODEL, "index/clusters.py", "bench/photos.py", *CELEBA_PEOPLE)),
    "overlap.json": Figure(
        f"python bench/overlap.py --cfp {CFP} --chips ../cache/aligned/template112-yunet "
        "--trained-list bench/celeba_heldout_trained.txt --json bench/results/overlap.json",
        None,
        (*SERVED_MODEL, "model/train/openset.py", "model/train/cfp.py", "bench/overlap.py",
         "bench/celeba_heldout.txt")),
    "sizes.json": Figure("python bench/sizes.py --docker --json bench/results/sizes.json", None,
                         ("pyproject.toml", "Dockerfile", "model/weights", "bench/sizes.py")),
    "photos-graph.json": Figure("python bench/photos_graph.py --bulk 100000 --json bench/results/photos-graph.json",
                                "python bench/photos_graph.py --bulk 2000 --json {out}",
                                ("index/vectors.py", "index/photos.py", "facesearch/photos.py", *SERVED_MODEL,
                                 "bench/photos_graph.py")),
    "gallery.json": Figure("python bench/gallery.py --json bench/results/gallery.json",
                           "python bench/gallery.py --quick --json {out}",
                           ("index", "bench/gallery.py")),
    "encoder-v3.json": Figure(f"python bench/encoder.py --before {V2} --json bench/results/encoder-v3.json",
                              "python bench/encoder.py --photos 8 --json {out}",
                              (*SERVED_MODEL, "bench/encoder.py")),
    "photos-scale-api.json": Figure(
        "python bench/photos_scale.py --sizes 0,100000,1000000 --kind exact --work ../scale-work-exact "
        "--json bench/results/photos-scale-api.json",
        "python bench/photos_scale.py --sizes 0,20000 --json {out}",
        SERVICE),
    "real-index-v3.json": Figure(
        "python bench/real_index.py --checkpoint model/weights/encoder.pt --cache ../cache --no-milvus "
        "--json bench/results/real-index-v3.json",
        None,
        (*SERVED_MODEL, "index/vectors.py", "bench/real_index.py", "bench/gallery.py")),
    "lfw-served.json": Figure("python bench/lfw_served.py --json bench/results/lfw-served.json", None,
                              (*SERVED_MODEL, "model/train/served.py", "model/train/lfw.py", "model/train/subject.py",
                               "bench/lfw_served.py")),
    "photos-library-lfw.json": Figure(
        "python bench/photos_scale.py --library-lfw-folds --work ../library-work "
        "--json bench/results/photos-library-lfw.json",
        None,
        SERVICE),
}


def lookup(data: Any, path: str) -> Any:
    """The value at ``path`` (see the module's docstring)."""
    for part in re.findall(r"[^.\[\]]+|\[[^\]]*\]", path):
        if part.startswith("[") and "=" in part:
            key, _, want = part[1:-1].partition("=")
            data = next(row for row in data if str(row.get(key)) == want)
        elif part.startswith("["):  # a key with a dot in it
            data = data[part[1:-1]]
        elif isinstance(data, list):
            data = data[int(part)]
        else:
            data = data[part]
    return data


def read(name: str) -> Any:
    return json.loads((RESULTS / name).read_text())


def shown(m: re.Match[str]) -> str:
    return format(lookup(read(m["file"]), m["path"]), m["fmt"])


def render(text: str) -> str:
    return MARK.sub(lambda m: f"<!--f {m['file']} {m['path']} {m['fmt']}-->{shown(m)}<!--/f-->", text)


def marks(text: str) -> list[re.Match[str]]:
    return list(MARK.finditer(text))


def wrong_numbers() -> list[str]:
    """Each published number that is not what its file says, as ``place: published != file``."""
    out = []
    for doc in PUBLISHED:
        for m in marks(doc.read_text()):
            try:
                want = shown(m)
            except (OSError, KeyError, IndexError, StopIteration, ValueError) as e:
                out.append(f"{doc.name}: {m['file']} {m['path']}: cannot be read ({type(e).__name__}: {e})")
                continue
            if m["value"] != want:
                out.append(f"{doc.name}: {m['file']} {m['path']}: published {m['value']!r}, the file says {want!r}")
    return out


def stale_files() -> list[str]:
    """Each results file a published number comes from whose commit is not this one's ancestor, ran on a dirty tree,
    or predates a change to the code it measures."""
    used = {m["file"] for doc in PUBLISHED for m in marks(doc.read_text())}
    out = []
    for name in sorted(used):
        figure = FIGURES.get(name)
        if figure is None:
            out.append(f"{name}: no bench registered in bench/figures.py makes it")
            continue
        commit = str(read(name).get("git_commit", ""))
        if not re.fullmatch(r"[0-9a-f]{40}", commit):
            out.append(f"{name}: made at {commit or 'no recorded commit'} (a clean tree's commit is needed)")
            continue
        if git("merge-base", "--is-ancestor", commit, "HEAD").returncode != 0:
            out.append(f"{name}: made at {commit[:9]}, which is not in this branch's history")
            continue
        changed = git("diff", "--name-only", commit, "HEAD", "--", *figure.measures).stdout.split()
        if changed:
            out.append(f"{name}: made at {commit[:9]}; changed since in what it measures: {', '.join(changed)}")
    return out


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)


def clean_tree() -> bool:
    return not git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results").stdout.strip()


def materialise_v2() -> None:
    """Encoder v2's shipped files from its release commit, where :data:`V2` names them."""
    out = ROOT / V2
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in ("encoder.pt", "encoder.onnx", "model_card.json"):
        blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{V2_COMMIT}:model/weights/{name}"],
                              capture_output=True, check=True).stdout
        (out.parent / name).write_bytes(blob)


def run(command: str) -> None:
    if V2 in command:
        materialise_v2()
    print(f"$ {command}", flush=True)
    program, *args = shlex.split(command)  # python or facesearch: this interpreter's, or its environment's command
    exe = sys.executable if program == "python" else str(Path(sys.executable).parent / program)
    subprocess.run([exe, *args], cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", choices=sorted(FIGURES), help="this results file's bench (repeat)")
    p.add_argument("--quick", action="store_true", help="CI-sized runs into a temporary folder; nothing published")
    p.add_argument("--render", action="store_true", help="only rewrite the published numbers from the files")
    p.add_argument("--check", action="store_true", help="only check the published numbers and the files' commits")
    a = p.parse_args(argv)
    if a.check:
        problems = wrong_numbers() + stale_files()
        print("\n".join(problems) or "every published number is its file's, and every file is current")
        return 1 if problems else 0
    if not a.render:
        names = a.only or sorted(FIGURES)
        if a.quick:
            with tempfile.TemporaryDirectory() as tmp:
                for name in names:
                    quick = FIGURES[name].quick
                    if quick is not None:
                        run(quick.format(out=Path(tmp) / name))
            return 0
        if not clean_tree():
            print("bench/figures.py: commit first: a figure records the commit it was made at", file=sys.stderr)
            return 2
        for name in names:
            run(FIGURES[name].command)
    for doc in PUBLISHED:
        doc.write_text(render(doc.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
