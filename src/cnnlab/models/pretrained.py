"""The registry of ImageNet-pretrained torchvision classifiers and their weights.

A name is a torchvision classification builder (``mobilenet_v2``, ``resnet50``, ``vgg16``, ...),
optionally with a weights tag (``resnet50:IMAGENET1K_V2``). The default weights of each model
are torchvision's ``DEFAULT`` except ``mobilenet_v2``, whose default is ``IMAGENET1K_V1``
(the file ``mobilenet_v2-b0353104.pth`` that ``make setup`` installs offline).

:class:`ImageNetClassifier` wraps a network so that it takes images in pixel space [0, 1]
(the weights' normalization sits inside), and splits it into features and head:
``forward_features`` returns the penultimate activations (after global pooling, the input of
the final linear layer) that the linear probe and other tools share.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.models import Weights, get_model_builder, get_model_weights, list_models
from torchvision.transforms import functional as TF

from cnnlab.errors import WeightsUnavailableError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "mobilenet_v2"
# Models whose default here differs from torchvision's DEFAULT (the offline file is V1).
DEFAULT_WEIGHTS_OVERRIDE = {"mobilenet_v2": "IMAGENET1K_V1"}


def classifier_names() -> list[str]:
    """All torchvision ImageNet classification builders."""
    return sorted(list_models(module=torchvision.models))


@dataclass(frozen=True)
class ModelSpec:
    """A resolved registry entry: builder name and weights enum member."""

    name: str
    weights: Weights

    @property
    def label(self) -> str:
        return f"{self.name} ({type(self.weights).__name__}.{self.weights.name})"

    @property
    def filename(self) -> str:
        return Path(self.weights.url).name

    @property
    def cache_path(self) -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename

    @property
    def available_offline(self) -> bool:
        return self.cache_path.is_file()


def resolve(name: str = DEFAULT_MODEL) -> ModelSpec:
    """``"resnet50"`` or ``"resnet50:IMAGENET1K_V2"`` -> :class:`ModelSpec`; ValueError if unknown."""
    base, _, tag = name.partition(":")
    valid = classifier_names()
    if base not in valid:
        raise ValueError(f"unknown model {base!r}; valid names: {', '.join(valid)} (see `cnnlab models`)")
    enum = get_model_weights(base)
    tag = tag or DEFAULT_WEIGHTS_OVERRIDE.get(base, "DEFAULT")
    try:
        weights = enum[tag] if tag != "DEFAULT" else enum.DEFAULT
    except KeyError:
        tags = ", ".join(w.name for w in enum)
        raise ValueError(f"unknown weights {tag!r} for {base}; valid: {tags}") from None
    return ModelSpec(base, weights)


def _find_head(net: nn.Module) -> nn.Linear:
    """The final classification layer: the last ``nn.Linear`` producing the class logits."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(net).__name__} has no linear classification head")
    return linears[-1]


class ImageNetClassifier(nn.Module):
    """A pretrained classifier on images in [0, 1], with the weights' preprocessing and names.

    ``forward(x)`` gives logits; ``forward_features(x)`` the penultimate features (the input of
    the final linear layer, i.e. after global pooling); ``preprocess(img)`` applies exactly the
    weights' evaluation transform (resize, centre crop) minus the normalization, which
    ``forward`` applies itself.
    """

    def __init__(self, net: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.net = net
        self.spec = spec
        t = spec.weights.transforms()
        self.eval_transform = t  # the weights' own transform (with normalization)
        self.resize_size = list(t.resize_size)
        self.crop_size = list(t.crop_size)
        self.interpolation = t.interpolation
        self.antialias = t.antialias
        self.register_buffer("mean", torch.tensor(t.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(t.std).view(1, 3, 1, 1), persistent=False)
        self.categories: list[str] = list(spec.weights.meta["categories"])
        self.head = _find_head(net)
        self.feature_dim = self.head.in_features
        # head inputs captured by forward_features, one slot per thread (thread-safe extraction)
        self._captured: dict[int, torch.Tensor] = {}
        self.head.register_forward_hook(self._capture)

    @property
    def name(self) -> str:
        return self.spec.name

    def _capture(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self._captured[threading.get_ident()] = inputs[0]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images ``x`` (B, 3, H, W) in [0, 1]."""
        return self.net(self.normalize(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, D): the input of the final linear layer."""
        key = threading.get_ident()
        self._captured.pop(key, None)
        self.net(self.normalize(x))
        feats = self._captured.pop(key, None)
        assert feats is not None and feats.shape[-1] == self.feature_dim
        return feats.flatten(1)

    def preprocess(self, img: Image.Image) -> torch.Tensor:
        """PIL RGB image -> (3, crop, crop) in [0, 1]: the weights' resize and centre crop."""
        img = TF.resize(img, self.resize_size, interpolation=self.interpolation, antialias=self.antialias)
        img = TF.center_crop(img, self.crop_size)
        return TF.convert_image_dtype(TF.pil_to_tensor(img), torch.float32)

    def preprocess_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable version of :meth:`preprocess` for (B, 3, H, W) tensors in [0, 1]."""
        x = TF.resize(x, self.resize_size, interpolation=self.interpolation, antialias=True)
        return TF.center_crop(x, self.crop_size)


def load_pretrained(name: str = DEFAULT_MODEL, device: str = "cpu") -> ImageNetClassifier:
    """Build the model with its pretrained weights (from the torch hub cache when present)."""
    spec = resolve(name)
    if not spec.available_offline:
        log.info("weights %s are not in %s; trying to download them", spec.filename, spec.cache_path.parent)
    try:
        net = get_model_builder(spec.name)(weights=spec.weights)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; corrupt files are RuntimeErrors
        hint = (
            "run `make setup` (it installs this file offline)"
            if spec.name == "mobilenet_v2" and spec.weights.name == "IMAGENET1K_V1"
            else f"download {spec.weights.url} on a machine with internet"
        )
        raise WeightsUnavailableError(
            f"pretrained weights for {spec.label} are unavailable: expected the file "
            f"{spec.cache_path} ({exc.__class__.__name__}: {exc}). To get it, {hint} and "
            f"place it at that path (or set TORCH_HOME)."
        ) from None
    model = ImageNetClassifier(net, spec).eval().to(device)
    log.info("model %s, %d parameters", spec.label, sum(p.numel() for p in net.parameters()))
    return model
