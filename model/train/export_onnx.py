"""`facesearch export-onnx`: write the ONNX graphs the service runs, so that it serves without PyTorch.

A checkpoint's encoder goes beside it (``run/best.pt`` -> ``run/best.onnx``, or ``--out``), carrying the
checkpoint's config, model card and SHA-256: the service serves the checkpoint from that graph (or the graph
alone, FACESEARCH_CHECKPOINT=run/best.onnx) on a machine without the train extra. `facesearch export` writes the
shipped encoder's graph itself. ``--detector`` writes the detectors' graphs to the shipped weights' folder: MTCNN's
three networks (facenet-pytorch's weights, exported from PyTorch) and YuNet's (``--yunet``: libfacedetection.train's
``yunet_n_dynamic.onnx``, its provenance, licence and SHA-256 written into the graph's metadata).
"""

from __future__ import annotations

from pathlib import Path

import torch

from model.embedder import SHIPPED_CHECKPOINT
from model.encoder import export_graph, write_atomically
from model.mtcnn import GRAPHS
from model.onnx_runtime import to_onnx
from model.train.commands import parser
from model.yunet import GRAPH as YUNET_GRAPH


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


YUNET_SOURCE = ("ShiqiYu/libfacedetection.train @ 0047ac24afb1a50a0c6105001c89d1b5b805dbf1 : "
                "onnx/yunet_n_dynamic.onnx")
YUNET_LICENCE = ("Apache-2.0 (libfacedetection.train: Shiqi Yu, OpenMMLab); libfacedetection itself MIT; "
                 "trained on WIDER FACE")


def export_yunet(source: Path, out: Path = YUNET_GRAPH) -> Path:
    """YuNet's published graph with its provenance in the metadata (source, SHA-256 of the file read, licence)."""
    import onnx

    from model.embedder import file_digest

    graph = onnx.load(str(source))
    names = [i.name for i in graph.graph.input]
    if names != ["input"] or [o.name for o in graph.graph.output][:3] != ["cls_8", "cls_16", "cls_32"]:
        raise SystemExit(f"{source} is not YuNet's graph (inputs {names})")
    for key, value in (("facesearch.source", YUNET_SOURCE), ("facesearch.source_sha256", file_digest(source)),
                       ("facesearch.licence", YUNET_LICENCE)):
        graph.metadata_props.add(key=key, value=value)
    write_atomically(out, graph.SerializeToString())
    return out


def main(argv: list[str] | None = None) -> int:
    a = parser("export-onnx", __doc__).parse_args(argv)
    checkpoint: Path = a.checkpoint or SHIPPED_CHECKPOINT
    print(f"wrote {export_graph(checkpoint, a.out)} (from {checkpoint})")
    if a.detector:
        for path in export_detector(GRAPHS[0].parent):
            print(f"wrote {path}")
    if a.yunet:
        print(f"wrote {export_yunet(a.yunet)} (from {a.yunet})")
    return 0
