"""`facesearch average`: average the weights of checkpoints taken along one training run.

A uniform average of points on one trajectory (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima";
Wortsman et al. 2022, "Model soups") often generalises better than either end point. Floating-point tensors
(weights and batch-norm statistics) are averaged; integer ones (batch counters) are taken from the first.
The card of the first checkpoint is kept, with the averaging recorded in its training section.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from model.encoder import Encoder, EncoderConfig, read_checkpoint, save_checkpoint
from model.errors import CheckpointError


def average(paths: list[Path], out: Path) -> None:
    ckpts = [read_checkpoint(p) for p in paths]
    config = EncoderConfig.from_dict(ckpts[0]["config"])
    shape = ("arch", "embedding_size", "input_size", "mean", "std", "template", "output_stride", "pool")
    for p, c in zip(paths[1:], ckpts[1:], strict=True):
        other = EncoderConfig.from_dict(c["config"])
        if any(getattr(other, k) != getattr(config, k) for k in shape):
            raise CheckpointError(f"{p} has another architecture or input than {paths[0]}")
    state = {}
    for key, first in ckpts[0]["state_dict"].items():
        if first.is_floating_point():
            state[key] = torch.stack([c["state_dict"][key] for c in ckpts]).mean(0)
        else:
            state[key] = first
    model = Encoder(config)
    model.load_state_dict(state)
    card = dict(ckpts[0].get("card") or {})
    training = dict(card.get("training") or {})
    training["weight_average_of"] = [str(p) for p in paths]
    training["steps_averaged"] = [int(c.get("train_state", {}).get("step", -1)) for c in ckpts]
    card["training"] = training
    save_checkpoint(out, model, card=card)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="facesearch average", description=__doc__)
    p.add_argument("checkpoints", type=Path, nargs="+", help="two or more checkpoints of one run")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    if len(a.checkpoints) < 2:
        p.error("give at least two checkpoints")
    average(a.checkpoints, a.out)
    print(f"wrote {a.out}")
    return 0
