"""`facesearch average`: average the weights of checkpoints taken along one training run.

A uniform average of points on one trajectory (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima";
Wortsman et al. 2022, "Model soups") often generalises better than either end point. Floating-point tensors
(weights and batch-norm statistics) are averaged; integer ones (batch counters) are taken from the first.
The card of the first checkpoint is kept, with the averaging recorded in its training section; the mix gets a model
version of its own (the first's, with ``-mix-`` and the SHA-256 of the mixed weights). ``--weights``
mixes unevenly: a fine-tuned model and the model it started from, mixed (WiSE-FT, Wortsman et al. 2022,
"Robust fine-tuning of zero-shot models"), keeps what the start knew that the fine-tuning data did not teach.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from model.embedder import EncoderConfig
from model.encoder import build_model, read_checkpoint, save_checkpoint
from model.errors import CheckpointError
from model.train.commands import parser


def average(paths: list[Path], out: Path, weights: list[float] | None = None) -> None:
    ckpts = [read_checkpoint(p) for p in paths]
    w = torch.tensor(weights if weights else [1.0] * len(paths), dtype=torch.float64)
    if len(w) != len(paths) or (w < 0).any() or w.sum() <= 0:
        raise CheckpointError("give one non-negative weight per checkpoint")
    w = w / w.sum()
    config = EncoderConfig.from_dict(ckpts[0]["config"])
    shape = ("arch", "embedding_size", "input_size", "mean", "std", "template", "chip",
             "chip_padding", "detector")
    for p, c in zip(paths[1:], ckpts[1:], strict=True):
        other = EncoderConfig.from_dict(c["config"])
        if any(getattr(other, k) != getattr(config, k) for k in shape):
            raise CheckpointError(f"{p} has another architecture or input than {paths[0]}")
    state = {}
    for key, first in ckpts[0]["state_dict"].items():
        if first.is_floating_point():
            stacked = torch.stack([c["state_dict"][key].double() for c in ckpts])
            state[key] = (stacked * w.view(-1, *[1] * first.dim())).sum(0).to(first.dtype)
        else:
            state[key] = first
    # a mix is another model than its first checkpoint: its own version, named by its weights
    digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in state.values())).hexdigest()[:8]
    config.model_version = f"{config.model_version}-mix-{digest}"
    model = build_model(config)
    model.load_state_dict(state)
    card = dict(ckpts[0].get("card") or {})
    training = dict(card.get("training") or {})
    training["weight_average_of"] = [str(p) for p in paths]
    training["steps_averaged"] = [int(c.get("train_state", {}).get("step", -1)) for c in ckpts]
    training["average_weights"] = [round(float(x), 6) for x in w]
    card["training"] = training
    save_checkpoint(out, model, card=card)


def main(argv: list[str] | None = None) -> int:
    p = parser("average", __doc__)
    a = p.parse_args(argv)
    if len(a.checkpoints) < 2:
        p.error("give at least two checkpoints")
    if a.weights and len(a.weights) != len(a.checkpoints):
        p.error("give one weight per checkpoint")
    average(a.checkpoints, a.out, a.weights)
    print(f"wrote {a.out}")
    return 0
