"""Networks run by ONNX Runtime: exported from their PyTorch modules once, in memory, when the service loads them
(the encoder in about 2 s, MTCNN's three networks in well under one), then run on CPU by ONNX Runtime, which is
1.2-2x faster than PyTorch's CPU kernels for these networks (bench/encoder.py). Outputs equal PyTorch's within
float rounding (tested: 1e-5)."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn


def to_onnx(model: nn.Module, example: torch.Tensor, inputs: list[str], outputs: list[str],
            dynamic_axes: dict[str, dict[int, str]]) -> bytes:
    """The eval-mode ``model`` as an ONNX graph (opset 17), with the named axes left free."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and shape-inference notes
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), buf,  # type: ignore[arg-type]  # the exporter writes to a stream too
                          input_names=inputs, output_names=outputs, opset_version=17, dynamic_axes=dynamic_axes,
                          dynamo=False)
    return buf.getvalue()


def session(graph: bytes, *, threads: int) -> Any:
    """An ONNX Runtime CPU session of ``graph`` using ``threads`` threads inside each call."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    # idle threads sleep rather than spin: spinning ones took the cores from the NumPy work between network calls
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


class OnnxModel:
    """float32 (N, 3, S, S) normalised input -> float32 (N, D), the same function as the PyTorch ``model``."""

    def __init__(self, model: nn.Module, input_size: int, *, threads: int) -> None:
        graph = to_onnx(model, torch.zeros(2, 3, input_size, input_size), ["x"], ["e"],
                        {"x": {0: "n"}, "e": {0: "n"}})
        self.session = session(graph, threads=threads)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.session.run(["e"], {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]
        return out
