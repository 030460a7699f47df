"""The registry of ImageNet-pretrained torchvision classifiers and their weights.

A name is a torchvision classification builder (``mobilenet_v2``, ``resnet50``, ``vgg16``, ...),
optionally with a weights tag (``resnet50:IMAGENET1K_V2``). The default weights of each model
are torchvision's ``DEFAULT`` except ``mobilenet_v2``, whose default is ``IMAGENET1K_V1``
(the file ``mobilenet_v2-b0353104.pth`` that ``make setup`` installs offline).

The network is built with ``weights=None`` and its state dict read by
:mod:`cnnlab.models.weights_file` (hash-checked, ``weights_only=True``), never by torchvision's
``Weights.get_state_dict``, which unpickles with ``weights_only=False``. :func:`build_network`
repeats what torchvision's builders do around that call (constructor arguments, DenseNet's key
renaming, GoogLeNet's auxiliary heads), so the result is the model torchvision would build.

:class:`ImageNetClassifier` wraps a network so that it takes images in pixel space [0, 1]
(the weights' normalization sits inside), and splits it into features and head:
``forward_features`` returns the penultimate activations (after global pooling, the input of
the final linear layer) that the linear probe and other tools share.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.models import Weights, get_model_builder, get_model_weights, list_models
from torchvision.transforms import functional as TF

from cnnlab.errors import WeightsIntegrityError
from cnnlab.models import weights_file

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
    if weights.meta.get("categories") is None:  # vgg16:IMAGENET1K_FEATURES has no trained classifier
        tags = ", ".join(w.name for w in enum if w.meta.get("categories"))
        raise ValueError(f"weights {base}:{weights.name} have no ImageNet classifier; valid: {tags}")
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


# Constructor arguments that torchvision's builders set, per builder module, when given weights
# (besides num_classes = the number of categories, which all of them set).
_BUILDER_KWARGS = {
    "torchvision.models.googlenet": lambda meta: {"transform_input": True, "aux_logits": True, "init_weights": False},
    "torchvision.models.inception": lambda meta: {"transform_input": True, "aux_logits": True, "init_weights": False},
    "torchvision.models.vgg": lambda meta: {"init_weights": False},
    "torchvision.models.vision_transformer": lambda meta: {"image_size": meta["min_size"][0]},
    "torchvision.models.maxvit": lambda meta: {"input_size": meta["min_size"]},
}
# DenseNet files keep the old module names 'norm.1', 'conv.2', ... (torchvision renames them).
_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _rename_keys(state_dict: dict[str, torch.Tensor], rename: Callable[[str], str]) -> dict[str, torch.Tensor]:
    """A copy of ``state_dict`` with renamed keys, keeping the module versions in ``_metadata``."""
    renamed = OrderedDict((rename(k), v) for k, v in state_dict.items())
    if hasattr(state_dict, "_metadata"):
        renamed._metadata = state_dict._metadata  # type: ignore[attr-defined]
    return renamed


def build_network(spec: ModelSpec, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """The torchvision network of ``spec`` holding ``state_dict``, as its builder would make it."""
    builder = get_model_builder(spec.name)
    module = builder.__module__
    kwargs = {"num_classes": len(spec.weights.meta["categories"])}
    kwargs.update(_BUILDER_KWARGS.get(module, lambda meta: {})(spec.weights.meta))
    net = builder(weights=None, **kwargs)
    if module == "torchvision.models.densenet":
        state_dict = _rename_keys(state_dict, lambda key: _DENSENET_OLD_KEY.sub(r"\1\2", key))
    net.load_state_dict(state_dict)
    if module == "torchvision.models.googlenet":  # its builder drops the untrained auxiliary heads
        net.aux_logits, net.aux1, net.aux2 = False, None, None
    return net


def load_pretrained(name: str = DEFAULT_MODEL, device: str = "cpu") -> ImageNetClassifier:
    """Build the model with its pretrained weights (from the torch hub cache, else downloaded).

    The weights file is hash-checked and read with ``weights_only=True``; a missing, corrupt or
    tampered file raises a :class:`~cnnlab.errors.WeightsUnavailableError` saying what to do.
    """
    spec = resolve(name)
    state = weights_file.fetch_state_dict(spec.weights.url, spec.cache_path, spec.label)
    try:
        net = build_network(spec, state)
    except RuntimeError as exc:  # load_state_dict: missing, unexpected or mis-shaped tensors
        raise WeightsIntegrityError(
            f"weights file {spec.cache_path} does not fit {spec.label} ({str(exc).splitlines()[0]}). "
            f"To restore it, {weights_file.restore_hint(spec.filename, spec.weights.url)}."
        ) from None
    model = ImageNetClassifier(net, spec).eval().to(device)
    log.info("model %s, %d parameters", spec.label, sum(p.numel() for p in net.parameters()))
    return model
