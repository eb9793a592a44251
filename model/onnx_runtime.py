"""Networks run by ONNX Runtime on CPU, which is 1.2-2x faster than PyTorch's CPU kernels for these networks
(bench/encoder.py, bench/detector.py). The graphs ship in model/weights (``facesearch export-onnx`` writes them);
:func:`to_onnx` exports a PyTorch module (only where torch is installed: training, or a checkpoint served without
its graph). Outputs equal PyTorch's within float rounding (tested: 1e-5)."""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


def to_onnx(model: nn.Module, example: torch.Tensor, inputs: list[str], outputs: list[str],
            dynamic_axes: dict[str, dict[int, str]]) -> bytes:
    """The eval-mode ``model`` as an ONNX graph (opset 17), with the named axes left free."""
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and shape-inference notes
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), buf,  # type: ignore[arg-type]  # the exporter writes to a stream too
                          input_names=inputs, output_names=outputs, opset_version=17, dynamic_axes=dynamic_axes,
                          dynamo=False)
    return buf.getvalue()


def session(graph: bytes | str, *, threads: int | None) -> Any:
    """An ONNX Runtime CPU session of ``graph`` (bytes, or a file's path) using ``threads`` threads inside each
    call (None: ONNX Runtime's choice, one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    # idle threads sleep rather than spin: spinning ones took the cores from the NumPy work between network calls
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
