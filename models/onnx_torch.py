"""A small ONNX -> PyTorch converter: an ONNX graph run as a differentiable ``nn.Module``.

Why our own: attacks need gradients to the input, so an ONNX file has to run as torch ops;
onnx2torch imports torchvision (no CPU wheel here), and the int8 block-quantised files of
the OpenCV Zoo need ``DequantizeLinear`` with ``block_size``, which it lacks.

How: the graph is read with the ``onnx`` package. Every node whose inputs are all constants
(initializers, ``Constant`` outputs) is evaluated once at load time, so blocked int8 weights
become fp32 constants and weight reshapes disappear; the remaining nodes run in topological
order in ``forward`` with torch ops. Constants a running node reads become parameters
(floating point) or buffers (integers), so ``.to(device)`` and ``state_dict`` work.
Inference semantics only: BatchNormalization uses its running statistics, Dropout is the
identity. Graph inputs with neither an initializer nor a consumer (stale weight names left
by quantisers) are ignored. An op outside :data:`OPS` is one error naming it and the file.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from facebench.errors import FacebenchError

from . import _onnx_shapes  # noqa: F401 (registers the shape ops)
from ._onnx_ops import OPS, _attrs, _onnx, to_tensor  # noqa: F401 (OPS, to_tensor re-exported)


# ---------------------------------------------------------------- the graph

@dataclass(frozen=True)
class Step:
    """One node that runs in ``forward``."""

    op_type: str
    inputs: Tuple[str, ...]  # "" for an absent optional input
    outputs: Tuple[str, ...]
    attrs: Dict[str, Any]
    name: str


@dataclass
class Plan:
    """A graph after constant folding: what ``forward`` runs, and the constants it reads."""

    inputs: List[str]
    input_shapes: List[Tuple[Optional[int], ...]]  # None: a symbolic or unknown size
    outputs: List[str]
    output_shapes: List[Tuple[Optional[int], ...]]
    steps: List[Step]
    constants: Dict[str, torch.Tensor]
    source: str


def _dims(value_info) -> Tuple[Optional[int], ...]:
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return ()
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)


def _topological(nodes, known: set, source: str) -> list:
    """The nodes in an order where each runs after the producers of its inputs (one pass
    for a graph that is already sorted, as the ONNX spec asks)."""
    ready, pending, order = set(known), list(nodes), []
    while pending:
        rest = []
        for node in pending:
            if all(i == "" or i in ready for i in node.input):
                order.append(node)
                ready.update(o for o in node.output if o)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            node = rest[0]
            missing = [i for i in node.input if i and i not in ready]
            raise FacebenchError(f"{source}: input {missing[0]!r} of node {node.name!r} "
                                 f"({node.op_type}) is produced by no node (or by a cycle)")
        pending = rest
    return order


def build_plan(model, source: str = "ONNX model") -> Plan:
    """Fold the constant part of an ``onnx.ModelProto`` and list the nodes left to run."""
    _, numpy_helper = _onnx()
    graph = model.graph
    unknown = sorted({f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx")
                      else n.op_type for n in graph.node
                      if n.domain not in ("", "ai.onnx") or n.op_type not in OPS})
    if unknown:
        raise FacebenchError(
            f"{source}: ONNX op{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"not supported by facebench's ONNX loader (it runs {len(OPS)} ops: "
            f"{', '.join(sorted(OPS))})")
    const: Dict[str, torch.Tensor] = {
        init.name: to_tensor(numpy_helper.to_array(init), f"initializer {init.name}")
        for init in graph.initializer}
    consumed = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    runtime = [v for v in graph.input if v.name not in const and v.name in consumed]
    steps: List[Step] = []
    live = {v.name for v in runtime}
    for node in _topological(graph.node, set(const) | live, source):
        attrs = _attrs(node)
        ins = tuple(node.input)
        outs = tuple(node.output)
        if all(i == "" or i in const for i in ins):  # fold it now
            args = [None if i == "" else const[i] for i in ins]
            try:
                with torch.no_grad():
                    result = OPS[node.op_type](args, attrs, len(outs))
            except (FacebenchError, RuntimeError, IndexError, KeyError, ValueError,
                    TypeError) as err:
                raise FacebenchError(f"{source}: cannot evaluate constant node {node.name!r} "
                                     f"({node.op_type}): {err}") from None
            for name, value in zip(outs, result if isinstance(result, tuple) else (result,)):
                if name:
                    const[name] = value
        else:
            steps.append(Step(node.op_type, ins, outs, attrs, node.name))
    needed = {i for s in steps for i in s.inputs} | {o.name for o in graph.output}
    return Plan(
        inputs=[v.name for v in runtime], input_shapes=[_dims(v) for v in runtime],
        outputs=[o.name for o in graph.output], output_shapes=[_dims(o) for o in graph.output],
        steps=steps, constants={k: v for k, v in const.items() if k in needed}, source=source)


def read_model(path):
    """``onnx.load`` with one-line errors for a missing or unreadable file."""
    onnx, _ = _onnx()
    path = Path(path)
    if not path.is_file():
        raise FacebenchError(f"ONNX file {path} not found")
    try:
        return onnx.load(str(path))
    except Exception as err:  # protobuf's DecodeError and friends share no useful base
        raise FacebenchError(f"cannot read ONNX file {path}: {type(err).__name__}: "
                             f"{str(err).strip()[:200]}") from None


@functools.lru_cache(maxsize=2)
def _cached_plan(path: str, size: int, mtime_ns: int) -> Plan:
    # keyed on size and mtime too, so an edited file is read again
    return build_plan(read_model(path), source=path)


def load_plan(path) -> Plan:
    """The folded plan of an ONNX file, read once per process (tensors shared: copy them)."""
    path = Path(path).expanduser().resolve()
    try:
        st = path.stat()
    except OSError as err:
        raise FacebenchError(f"cannot read ONNX file {path}: {err.strerror}") from None
    return _cached_plan(str(path), st.st_size, st.st_mtime_ns)


class OnnxModule(nn.Module):
    """Runs a :class:`Plan`: ``module(*inputs)`` -> the first output, or a tuple of all
    outputs when the graph has several."""

    def __init__(self, plan: Plan):
        super().__init__()
        self.source = plan.source
        self.input_names = list(plan.inputs)
        self.input_shapes = list(plan.input_shapes)
        self.output_names = list(plan.outputs)
        self.output_shapes = list(plan.output_shapes)
        self.steps = list(plan.steps)
        self._slots: Dict[str, str] = {}  # ONNX value name -> attribute name
        for name, value in plan.constants.items():
            slot = self._slot_name(name)
            value = value.detach().clone()
            if value.is_floating_point():
                self.register_parameter(slot, nn.Parameter(value))
            else:
                self.register_buffer(slot, value)
        self._handlers = [OPS[s.op_type] for s in self.steps]
        last = {}  # value name -> index of the last step reading it (freed after that)
        for i, s in enumerate(self.steps):
            for name in s.inputs:
                last[name] = i
        keep = set(self.output_names)
        self._free = [[n for n in set(s.inputs) if n and last.get(n) == i and n not in keep]
                      for i, s in enumerate(self.steps)]

    def _slot_name(self, name: str) -> str:
        base = "c_" + re.sub(r"\W", "_", name)
        slot, k = base, 1
        while slot in self._slots.values() or hasattr(self, slot):
            slot, k = f"{base}_{k}", k + 1
        self._slots[name] = slot
        return slot

    def _value(self, env: dict, name: str):
        if name == "":
            return None
        if name in env:
            return env[name]
        return getattr(self, self._slots[name])

    def forward(self, *inputs: torch.Tensor):
        if len(inputs) != len(self.input_names):
            raise FacebenchError(f"{self.source} takes {len(self.input_names)} input(s) "
                                 f"({', '.join(self.input_names)}), got {len(inputs)}")
        env = dict(zip(self.input_names, inputs))
        for step, handler, free in zip(self.steps, self._handlers, self._free):
            try:
                result = handler([self._value(env, n) for n in step.inputs], step.attrs,
                                 len(step.outputs))
            except FacebenchError as err:  # an unsupported variant of a supported op
                raise FacebenchError(f"{self.source}: node {step.name!r} ({step.op_type}): "
                                     f"{err}") from None
            for name, value in zip(step.outputs, result if isinstance(result, tuple)
                                   else (result,)):
                if name:
                    env[name] = value
            for name in free:
                env.pop(name, None)
        outs = tuple(self._value(env, n) for n in self.output_names)
        return outs[0] if len(outs) == 1 else outs


def load_onnx(path) -> OnnxModule:
    """An ONNX file as an :class:`OnnxModule` in eval mode."""
    return OnnxModule(load_plan(path)).eval()
