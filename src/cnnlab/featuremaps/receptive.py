"""The receptive field of a layer's units, computed from the layers on the path to it.

The network is traced up to the layer (torchvision's ``create_feature_extractor``) and the
graph is walked in order. Per axis, each tensor carries (size ``r``, jump ``j``, start ``s``):
a unit ``i`` of it sees the input pixels centred on ``s + i·j``, ``r`` wide; the input is
(1, 1, 0). A convolution or pooling with kernel ``k``, stride ``t``, padding ``p`` and
dilation ``d`` (``k' = d·(k-1) + 1``) gives::

    r' = r + (k' - 1)·j        s' = s + ((k' - 1)/2 - p)·j        j' = j·t

Element-wise layers (normalization, activations, dropout) keep it; an element-wise sum or
product of branches (residual connections) or a channel concatenation takes the union of the
branches' fields, which must share a jump. Anything else (global pooling, resizing, attention)
raises a :class:`ReceptiveFieldError` naming the node.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.feature_extraction import create_feature_extractor

from cnnlab.errors import CnnlabError

POINTWISE_MODULES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.Dropout, nn.Dropout2d, nn.Identity,
                     nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
                     nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh)
POINTWISE_FUNCTIONS = {operator.add, operator.iadd, operator.mul, operator.imul, torch.add, torch.mul, torch.relu,
                       torch.sigmoid, F.relu, F.relu6, F.hardtanh, F.hardswish, F.silu, F.gelu, F.dropout}
POINTWISE_METHODS = {"add", "add_", "mul", "mul_", "relu", "relu_", "sigmoid", "contiguous", "clone"}


class ReceptiveFieldError(CnnlabError):
    """The path to a layer holds an operation whose receptive field is not computed here."""


@dataclass(frozen=True)
class ReceptiveField:
    """Per axis (height, width): the field's size and the jump and start of its centres, in input pixels."""

    size: tuple[float, float]
    jump: tuple[float, float]
    start: tuple[float, float]

    def box(self, y: int, x: int, height: int | None = None, width: int | None = None) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), bottom/right exclusive, of unit (y, x); clipped to the image when its size is given."""
        (top, bottom), (left, right) = (self._span(0, y, height), self._span(1, x, width))
        return top, left, bottom, right

    def _span(self, axis: int, i: int, limit: int | None) -> tuple[int, int]:
        centre = self.start[axis] + i * self.jump[axis]
        lo = math.floor(centre - (self.size[axis] - 1) / 2 + 1e-9)
        hi = lo + int(round(self.size[axis]))
        return (max(lo, 0), min(hi, limit)) if limit is not None else (lo, hi)


Axis = tuple[float, float, float]  # r, j, s


def _kernel_step(state: Axis, k: int, stride: int, padding: int, dilation: int) -> Axis:
    r, j, s = state
    k_eff = dilation * (k - 1) + 1
    return r + (k_eff - 1) * j, j * stride, s + ((k_eff - 1) / 2 - padding) * j


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _through_module(module: nn.Module, state: list[Axis], where: str) -> list[Axis]:
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        if isinstance(module, nn.Conv2d) and isinstance(module.padding, str):
            raise ReceptiveFieldError(f"{where}: padding={module.padding!r} is not supported; use numeric padding")
        k, t, p = _pair(module.kernel_size), _pair(module.stride or module.kernel_size), _pair(module.padding)
        d = _pair(getattr(module, "dilation", 1))
        return [_kernel_step(state[a], k[a], t[a], p[a], d[a]) for a in (0, 1)]
    if isinstance(module, POINTWISE_MODULES):
        return state
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            state = _through_module(child, state, f"{where}.{name}")
        return state
    if type(module).__module__.startswith("torch.nn"):  # a built-in layer of another kind (pooling, resizing...)
        raise ReceptiveFieldError(f"cannot follow the receptive field through {where} ({type(module).__name__}); "
                                  "supported: Conv2d, MaxPool2d, AvgPool2d and element-wise layers")
    try:  # a composite block (a residual block, say): trace it and walk its graph
        graph = torch.fx.symbolic_trace(module)
    except Exception as exc:  # fx raises many types for untraceable Python
        raise ReceptiveFieldError(f"cannot trace {where} ({type(module).__name__}): {exc}") from None
    return _walk(graph, state, where)


def _union(states: list[list[Axis]], where: str) -> list[Axis]:
    """The smallest field covering every branch's field (branches must share a jump)."""
    out = []
    for a in (0, 1):
        jumps = {st[a][1] for st in states}
        if len(jumps) > 1:
            raise ReceptiveFieldError(f"{where}: branches with different strides ({sorted(jumps)}) are combined")
        lo = min(st[a][2] - (st[a][0] - 1) / 2 for st in states)
        hi = max(st[a][2] + (st[a][0] - 1) / 2 for st in states)
        out.append((hi - lo + 1, jumps.pop(), (lo + hi) / 2))
    return out


def receptive_field(net: nn.Module, node: str) -> ReceptiveField:
    """The receptive field of the units of ``net``'s output at ``node`` (a module path such as ``features.7``)."""
    graph = create_feature_extractor(net, return_nodes={node: "out"})
    return _finish(_walk(graph, [(1.0, 1.0, 0.0), (1.0, 1.0, 0.0)], node))


def _walk(graph: torch.fx.GraphModule, start: list[Axis], where: str) -> list[Axis]:
    """The field at ``graph``'s output when its input has field ``start``."""
    state: dict[str, list[Axis]] = {}
    for n in graph.graph.nodes:
        inputs = [state[a.name] for a in n.all_input_nodes if a.name in state]
        here = f"{where}/{n.target if n.op == 'call_module' else n.name}"
        if n.op == "placeholder":
            state[n.name] = start
        elif n.op == "get_attr" or not inputs:
            continue  # constants: no receptive field of their own
        elif n.op == "output":
            return inputs[0]
        elif n.op == "call_module":
            state[n.name] = _through_module(graph.get_submodule(n.target), inputs[0], here)
        elif (n.op == "call_function" and n.target in POINTWISE_FUNCTIONS) or (
                n.op == "call_method" and n.target in POINTWISE_METHODS):
            state[n.name] = _union(inputs, here) if len(inputs) > 1 else inputs[0]
        elif n.op == "call_function" and n.target is torch.cat and _cat_dim(n) in (1, -3):
            state[n.name] = _union(inputs, here)  # channels of several branches side by side
        else:
            raise ReceptiveFieldError(f"cannot follow the receptive field through {here} "
                                      f"({n.op} {getattr(n.target, '__name__', n.target)})")
    raise ReceptiveFieldError(f"{where}: the traced graph has no output")


def _cat_dim(n) -> int:
    return n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0)


def _finish(axes: list[Axis]) -> ReceptiveField:
    (rh, jh, sh), (rw, jw, sw) = axes
    return ReceptiveField((rh, rw), (jh, jw), (sh, sw))
