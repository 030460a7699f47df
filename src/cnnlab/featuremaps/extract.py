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

MIN_BLOCKS = 6  # refine to finer blocks until there are at least this many
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
    # groups: every Sequential -> its children that contain a convolution
    groups: dict[str, list[str]] = {}
    for name, module in net.named_modules():
        if isinstance(module, nn.Sequential):
            kids = [f"{name}.{c}" if name else c for c, sub in module.named_children() if _has_conv(sub)]
            if len(kids) >= 2:
                groups[name] = kids

    def inside(path: str, ancestor: str) -> bool:
        return ancestor == "" or path.startswith(ancestor + ".")

    # start from the outermost groups; refine (a block -> its group's children) until >= MIN_BLOCKS
    def nested(g: str) -> bool:  # g lies inside a block of another group
        return any(inside(g, k) or g == k for o, kids in groups.items() if o != g for k in kids)

    blocks = [k for g, kids in groups.items() if not nested(g) for k in kids]
    while len(blocks) < MIN_BLOCKS:
        refined = []
        for b in blocks:
            sub = [k for g, kids in groups.items() if g == b or (inside(g, b) and g != b) for k in kids]
            sub = [k for k in dict.fromkeys(sub) if not any(k != o and inside(k, o) for o in sub)]
            refined.extend(sub or [b])
        if refined == blocks:
            break
        blocks = refined

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
