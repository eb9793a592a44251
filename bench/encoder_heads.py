"""The encoder's head options side by side in one run: a training step and inference speed.

    python bench/encoder_heads.py [--threads 2]

Average pool on the 4x4 map (the default), MobileFaceNet's global depthwise pool on it, and output stride 16
(a 7x7 map) with either pool. A training step is forward + backward of 128 crops (32 people x 4 photos);
inference is faces/s of the folded model at batch 32. Ratios are to the default, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402
from encoder import timed  # noqa: E402

from model.embedder import EncoderConfig  # noqa: E402
from model.encoder import Encoder, fuse_for_inference  # noqa: E402

HEADS = [(32, "avg"), (32, "gdc"), (16, "avg"), (16, "gdc")]


def seconds(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    return statistics.median(timed(fn, repeat))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    train_x = torch.randn(128, 3, 112, 112).contiguous(memory_format=torch.channels_last)
    infer_x = torch.randn(32, 3, 112, 112).contiguous(memory_format=torch.channels_last)
    print(machine(), flush=True)
    base: tuple[float, float] | None = None
    for stride, pool in HEADS:
        model = Encoder(EncoderConfig(output_stride=stride, pool=pool)).train()
        step = seconds(lambda m=model: m(train_x).sum().backward(), a.repeat)
        fused = fuse_for_inference(model)
        with torch.inference_mode():
            faces = 32 / seconds(lambda f=fused: f(infer_x), a.repeat)
        base = base or (step, faces)
        print(f"stride {stride}, {pool} pool: train step {step:.2f} s ({step / base[0]:.2f}x), "
              f"inference {faces:.0f} faces/s ({faces / base[1]:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
