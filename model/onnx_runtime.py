"""Networks run by ONNX Runtime on CPU, which is 1.2-2x faster than PyTorch's CPU kernels for these networks
(bench/encoder.py, bench/detector.py). The graphs ship in model/weights (``facesearch export-onnx`` writes them);
:func:`to_onnx` exports a PyTorch module (only where torch is installed: training, or a checkpoint served without
its graph). Outputs equal PyTorch's within float rounding (tested: 1e-5).

A :func:`session` asked for fewer threads than the machine has cores keeps a second session on every core, and
each call picks by what else is computing (:data:`CORES`): requests side by side keep to their few threads each
(more requests in parallel served more photos per second than more threads per call), while a request computing
alone uses the cores the others would have used (bench/api.py: a lone search 26.4 -> 23.7 ms with 2 threads)."""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
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


class Cores:
    """Which threads are computing now (decoding, detecting, running a network), so that a network call can tell
    whether it is alone on the machine. One per process (:data:`CORES`): the cores are the process's, whoever
    holds the sessions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: Counter[int] = Counter()  # thread id -> nesting depth
        self._shared = 0

    @contextmanager
    def computing(self) -> Iterator[None]:
        """The calling thread computes until the block ends (nested blocks count once)."""
        me = threading.get_ident()
        with self._lock:
            self._busy[me] += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy[me] -= 1
                if not self._busy[me]:
                    del self._busy[me]

    def alone(self) -> bool:
        """Whether no thread but the calling one is computing."""
        me = threading.get_ident()
        with self._lock:
            return not self._shared and all(t == me for t in self._busy)

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Calls in this block (from any thread) run as when others compute: the warm-up sizes both sessions'
        buffers with it."""
        with self._lock:
            self._shared += 1
        try:
            yield
        finally:
            with self._lock:
                self._shared -= 1


CORES = Cores()


class Session:
    """An ONNX Runtime session on ``threads`` threads per call, and on every core (a second session) when the call
    is alone on the machine (:data:`CORES`); ``run``, ``get_modelmeta`` and ``get_outputs`` as ONNX Runtime's."""

    def __init__(self, graph: bytes | str, *, threads: int | None) -> None:
        cores = os.cpu_count() or 1
        self.narrow = _session(graph, threads=threads)
        self.wide = _session(graph, threads=cores) if threads and threads < cores else None

    def run(self, outputs: list[str] | None, feeds: dict[str, Any]) -> Any:
        with CORES.computing():
            use = self.wide if self.wide is not None and CORES.alone() else self.narrow
            return use.run(outputs, feeds)

    def get_modelmeta(self) -> Any:
        return self.narrow.get_modelmeta()

    def get_outputs(self) -> Any:
        return self.narrow.get_outputs()


def session(graph: bytes | str, *, threads: int | None) -> Session:
    """A session of ``graph`` (bytes, or a file's path): ``threads`` threads inside each call when others compute,
    every core when the call is alone (None: ONNX Runtime's choice, one per core, always)."""
    return Session(graph, threads=threads)


def _session(graph: bytes | str, *, threads: int | None) -> Any:
    """An ONNX Runtime CPU session using ``threads`` threads inside each call (None: one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    # idle threads sleep rather than spin: spinning ones took the cores from the NumPy work between network calls
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
