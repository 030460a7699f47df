"""Find a network's blocks in its traced graph and extract their feature maps.

Candidate layers are the *blocks* of the network: the children of every ``nn.Sequential``
that holds convolutions (``features.0`` … ``features.18`` in MobileNetV2, ``layer1.0`` …
``layer4.2`` in ResNet-50), kept only if torchvision's graph tracer
(:func:`~torchvision.models.feature_extraction.get_graph_node_names`) sees them and their output
is a spatial map. Their order in the graph is their depth. A module name used as a return node
gives that block's output (torchvision's ``create_feature_extractor`` semantics).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

STAGE_FRACTIONS = {"early": 0.15, "middle": 0.5, "late": 1.0}  # position along the block sequence


@dataclass
class Layer:
    name: str  # module path, usable as a return node
    depth: int  # index among the candidate blocks, in graph order
    fraction: float  # depth / (number of blocks - 1)


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def candidate_layers(net: nn.Module) -> list[Layer]:
    """The network's convolutional blocks in graph order (see module docstring)."""
    _, eval_nodes = get_graph_node_names(net.eval())
    blocks: list[str] = []
    for name, module in net.named_modules():
        if isinstance(module, nn.Sequential) and len(module) >= 3 and _has_conv(module):
            for child, sub in module.named_children():
                path = f"{name}.{child}" if name else child
                if _has_conv(sub) and not any(path.startswith(b + ".") for b in blocks):
                    blocks.append(path)
    # nested Sequentials: keep the outermost sequence with the most blocks per parent
    blocks = [b for b in blocks if not any(b != o and b.startswith(o + ".") for o in blocks)]

    def first_node(path: str) -> int:
        for i, node in enumerate(eval_nodes):
            if re.match(rf"^{re.escape(path)}(\.|$)", node):
                return i
        return -1

    ordered = sorted((first_node(b), b) for b in blocks if first_node(b) >= 0)
    n = len(ordered)
    if n < 3:
        raise ValueError(f"{type(net).__name__}: found only {n} convolutional blocks; pass --layers explicitly")
    return [Layer(b, i, i / (n - 1)) for i, (_, b) in enumerate(ordered)]


def pick_stages(layers: list[Layer]) -> dict[str, Layer]:
    """The early, middle and late block: the ones nearest to :data:`STAGE_FRACTIONS`."""
    picked = {}
    for stage, frac in STAGE_FRACTIONS.items():
        picked[stage] = min(layers, key=lambda layer: (abs(layer.fraction - frac), -layer.depth))
    return picked


@torch.no_grad()
def extract(net: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Outputs of the named blocks for a normalized input batch ``x`` (B, 3, H, W)."""
    was_training = net.training
    extractor = create_feature_extractor(net, return_nodes={n: n for n in names})
    extractor.eval()
    try:
        out = extractor(x)
    finally:
        net.train(was_training)
    for name, t in out.items():
        if t.ndim != 4:
            raise ValueError(f"layer {name!r} gives a {t.ndim}-d output, not a feature map (B, C, H, W)")
    return out
