"""LFW View 2 protocol: pairs.txt parsing and fold bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    fold: int  # 1-based
    name1: str
    index1: int
    name2: str
    index2: int

    @property
    def same(self) -> bool:
        return self.name1 == self.name2

    @property
    def files(self) -> tuple[str, str]:
        return photo_path(self.name1, self.index1), photo_path(self.name2, self.index2)


def photo_path(name: str, index: int) -> str:
    """Path of image ``index`` of ``name`` relative to the LFW tree."""
    return f"{name}/{name}_{index:04d}.jpg"


def read_pairs(path: Path) -> list[Pair]:
    """Parse pairs.txt (header ``folds n``; per fold n matched then n mismatched lines)."""
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    header = lines[0]
    folds, n = (int(header[0]), int(header[1])) if len(header) == 2 else (1, int(header[0]))
    pairs = []
    body = lines[1:]
    if len(body) != folds * 2 * n:
        raise ValueError(f"{path}: expected {folds * 2 * n} pair lines, found {len(body)}")
    for i, parts in enumerate(body):
        fold = i // (2 * n) + 1
        if len(parts) == 3:
            pairs.append(Pair(fold, parts[0], int(parts[1]), parts[0], int(parts[2])))
        elif len(parts) == 4:
            pairs.append(Pair(fold, parts[0], int(parts[1]), parts[2], int(parts[3])))
        else:
            raise ValueError(f"{path}: bad pair line {' '.join(parts)!r}")
    return pairs


def parse_folds(spec: str) -> list[int]:
    """'1-2' -> [1, 2]; '1,3,5' -> [1, 3, 5]."""
    out: list[int] = []
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        elif part.strip():
            out.append(int(part))
    return sorted(set(out))


def people_in_folds(pairs: list[Pair], folds: list[int]) -> set[str]:
    """Every person named in the given folds."""
    return {name for p in pairs if p.fold in folds for name in (p.name1, p.name2)}
