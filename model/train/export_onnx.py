"""`facesearch export-onnx`: write the ONNX graphs the service runs, so that it serves without PyTorch.

A checkpoint's encoder goes beside it (``run/best.pt`` -> ``run/best.onnx``, or ``--out``), carrying the
checkpoint's config, model card and SHA-256: the service serves the checkpoint from that graph (or the graph
alone, FACESEARCH_CHECKPOINT=run/best.onnx) on a machine without the train extra. `facesearch export` writes the
shipped encoder's graph itself. ``--detector`` writes MTCNN's three networks (facenet-pytorch's weights) to the
shipped weights' folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from model.embedder import SHIPPED_CHECKPOINT
from model.encoder import export_graph, write_atomically
from model.mtcnn import GRAPHS
from model.onnx_runtime import to_onnx
from model.train.commands import parser


def export_detector(folder: Path) -> list[Path]:
    """MTCNN's P-Net (any image size), R-Net and O-Net (any batch) as the graphs :class:`model.mtcnn.Mtcnn` runs."""
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    free = {0: "n"}
    graphs = [to_onnx(PNet(), torch.zeros(1, 3, 24, 24), ["x"], ["reg", "prob"],
                      {"x": {2: "h", 3: "w"}, "reg": {2: "h", 3: "w"}, "prob": {2: "h", 3: "w"}}),
              to_onnx(RNet(), torch.zeros(2, 3, 24, 24), ["x"], ["reg", "prob"],
                      {"x": free, "reg": free, "prob": free}),
              to_onnx(ONet(), torch.zeros(2, 3, 48, 48), ["x"], ["reg", "points", "prob"],
                      {"x": free, "reg": free, "points": free, "prob": free})]
    out = []
    for shipped, graph in zip(GRAPHS, graphs, strict=True):
        write_atomically(folder / shipped.name, graph)
        out.append(folder / shipped.name)
    return out


def main(argv: list[str] | None = None) -> int:
    a = parser("export-onnx", __doc__).parse_args(argv)
    checkpoint: Path = a.checkpoint or SHIPPED_CHECKPOINT
    print(f"wrote {export_graph(checkpoint, a.out)} (from {checkpoint})")
    if a.detector:
        for path in export_detector(GRAPHS[0].parent):
            print(f"wrote {path}")
    return 0
