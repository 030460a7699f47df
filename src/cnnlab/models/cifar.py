"""cnnlab's own CIFAR-10 networks: ``hw-mish``, ``hw-mish-bn`` and ``improved``.

Every network takes images in [0, 1] (B, 3, 32, 32); the per-channel normalization is its
first module. Each has ``forward_features`` (the pooled penultimate features), ``head`` (the
final linear layer), ``first_conv`` (for the filter figure) and ``init_scheme`` (the explicit
weight initialization, recorded with every run).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from cnnlab.models.cpu_ops import MaxPool2x2, Mish
from cnnlab.registry import Registry

MODELS: Registry[Callable[[], CifarNet]] = Registry("CIFAR-10 model")
NUM_CLASSES = 10
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    """(x - mean) / std per channel; inputs are images in [0, 1]."""

    def __init__(self, mean=MEAN, std=STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class CifarNet(nn.Module):
    """Normalize -> ``features`` (ends with global pooling, gives B x D) -> ``head`` (D -> 10)."""

    init_scheme = ""

    def __init__(self, features: nn.Module, head: nn.Linear, head_scale: float = 1.0) -> None:
        super().__init__()
        self.normalize = Normalize()
        self.features = features
        self.head = head
        self.head_scale = head_scale

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.normalize(x))  # B, D

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)) * self.head_scale  # B, 10 logits

    @property
    def first_conv(self) -> nn.Conv2d:
        return next(m for m in self.modules() if isinstance(m, nn.Conv2d))

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def init_from_data(self, images: torch.Tensor) -> None:
        """Data-dependent initialization (a no-op except for ``improved``); images in [0, 1]."""


def _kaiming(module: nn.Module) -> None:
    """Kaiming-normal (fan-in, ReLU gain) convolutions; zero biases; BatchNorm γ=1, β=0.

    Mish behaves like ReLU for large |x| and has about the same second moment, so the ReLU
    gain sqrt(2) keeps activations' variance roughly constant through depth.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1 / math.sqrt(m.in_features))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


KAIMING = ("Kaiming normal (fan_in, ReLU gain sqrt(2)) for convolutions, N(0, 1/fan_in) for the "
           "linear layer, zero biases, BatchNorm weight 1 / bias 0")


# ----------------------------------------------------------------------------- hw-mish
class HWMish(CifarNet):
    """The specified network, exactly.

    Conv 64@11x11 -> Mish -> MaxPool 2x2/2 -> Conv 128@3x3 -> Mish -> Conv 128@3x3 -> Mish ->
    global average pool (over the whole map) -> Linear 128->10 (softmax in the cross-entropy).

    Padding: "same" everywhere (5 px for the 11x11 conv, 1 px for the 3x3 convs), with zeros.
    Without it the 11x11 conv would shrink 32x32 to 22x22 and see the 5-px border only through
    the edge of its receptive field, yet CIFAR objects often touch the border; with it every
    pixel is the centre of a filter, the maps stay 32 -> 16 -> 16 -> 16, and the global average
    pool sees the whole image. Zero padding of the normalized input equals padding with the
    data-set mean colour, the most neutral value. Mish and the pool come from :mod:`cnnlab.models.cpu_ops`
    (torch's functions, computed faster for bf16 on the CPU).
    """

    init_scheme = KAIMING

    def __init__(self, batchnorm: bool = False) -> None:
        bias = not batchnorm  # a conv that feeds BatchNorm needs no bias: BN's β replaces it

        def block(c_in: int, c_out: int, k: int) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=bias)]
            if batchnorm:
                layers.append(nn.BatchNorm2d(c_out))
            return layers + [Mish()]

        features = nn.Sequential(
            *block(3, 64, 11),                      # B, 64, 32, 32
            MaxPool2x2(),                           # B, 64, 16, 16
            *block(64, 128, 3),                     # B, 128, 16, 16
            *block(128, 128, 3),                    # B, 128, 16, 16
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # B, 128
        )
        super().__init__(features, nn.Linear(128, NUM_CLASSES))
        _kaiming(self)


@MODELS.register("hw-mish")
def hw_mish() -> CifarNet:
    """The specified network: 11x11 conv, pool, two 3x3 convs, Mish, global average pool."""
    return HWMish(batchnorm=False)


@MODELS.register("hw-mish-bn")
def hw_mish_bn() -> CifarNet:
    """``hw-mish`` with BatchNorm after every convolution (and no conv biases)."""
    return HWMish(batchnorm=True)


# ----------------------------------------------------------------------------- improved
class ConvGroup(nn.Module):
    """conv3x3 -> maxpool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU (halves the resolution)."""

    def __init__(self, c_in: int, c_out: int, bn_momentum: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(c_out, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(c_out, momentum=bn_momentum)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))  # B, C, H/2, W/2
        return self.act(self.norm2(self.conv2(x)))


class Improved(CifarNet):
    """A fast, accurate VGG-style net in the spirit of the published airbench94 ideas.

    Design choices (each one measured to matter on CIFAR-10 at small budgets):

    * **Whitened 2x2 first layer.** The first conv (3 -> 24, 2x2, no padding) is not learned:
      it is set from the data to the PCA whitening of 2x2x3 patches (12 eigenvectors scaled by
      1/sqrt(eigenvalue), and their negatives, so GELU keeps both signs). It decorrelates the
      input so that the first trained layers see unit-variance, uncorrelated features, and
      training converges in a few epochs. Only its bias is trained (first epochs).
    * **Small filters, VGG-style groups.** Three groups of two 3x3 convs with a 2x2 max-pool
      after the first conv of each group (widths 64, 256, 256): 31 -> 15 -> 7 -> 3 px. 3x3
      stacks see the same field as larger filters with fewer parameters and more non-linearity.
    * **BatchNorm without conv biases, BN scale frozen at 1**, high BN momentum (statistics
      track the fast-moving weights of a short run), GELU activations.
    * **Global max pooling** and a bias-free linear head whose logits are scaled by 1/9 (keeps
      the initial softmax soft, which works with the label smoothing of the recipe).
    * **Identity-friendly init:** conv weights Kaiming-normal, then the first ``c_in`` output
      channels of each conv set to a Dirac (identity) kernel, so at initialization every group
      passes its input through and the net starts close to a shallow one.

    The training recipe lives with the trainer's defaults (``cnnlab.train.config``): Muon for the
    conv filters and Nesterov SGD for the rest, a linear decay from the peak with no warm-up, label
    smoothing 0.2, weight decay, translate-by-2 and alternating flip augmentation (each image
    mirrored in every other epoch, so every pair of epochs shows both orientations), and test-time
    augmentation (flip + 1-px translations).
    """

    init_scheme = ("PCA whitening of 2x2 patches for the first (frozen) conv; Kaiming normal "
                   "(fan_in, ReLU gain) + partial Dirac identity for the other convs; N(0, 1/fan_in) "
                   "head; BatchNorm weight 1 (frozen) / bias 0")

    def __init__(self, widths: tuple[int, int, int] = (64, 256, 256), bn_momentum: float = 0.4) -> None:
        self.whiten_width = 2 * 3 * 2 * 2
        whiten = nn.Conv2d(3, self.whiten_width, 2, padding=0, bias=True)
        features = nn.Sequential(
            whiten, nn.GELU(),                            # B, 24, 31, 31
            ConvGroup(self.whiten_width, widths[0], bn_momentum),  # B, 64, 15, 15
            ConvGroup(widths[0], widths[1], bn_momentum),          # B, 256, 7, 7
            ConvGroup(widths[1], widths[2], bn_momentum),          # B, 256, 3, 3
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),                 # B, 256
        )
        super().__init__(features, nn.Linear(widths[2], NUM_CLASSES, bias=False), head_scale=1 / 9)
        _kaiming(self)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not whiten:
                nn.init.dirac_(m.weight.data[: m.in_channels])
            if isinstance(m, nn.BatchNorm2d):
                m.weight.requires_grad_(False)
        whiten.weight.requires_grad_(False)
        nn.init.zeros_(whiten.bias)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the first conv to the PCA whitening of the 2x2 patches of ``images`` ([0, 1])."""
        conv = self.first_conv
        x = self.normalize(images.float())  # N, 3, 32, 32
        C, (kh, kw) = x.shape[1], conv.kernel_size
        patches = x.unfold(2, kh, 1).unfold(3, kw, 1)  # N, C, H', W', kh, kw
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, C * kh * kw)  # P, 12
        cov = patches.T @ patches / patches.shape[0]  # 12, 12
        eigval, eigvec = torch.linalg.eigh(cov)  # ascending
        eigval, eigvec = eigval.flip(0), eigvec.flip(1)  # largest first
        filters = (eigvec.T / torch.sqrt(eigval + eps)[:, None]).reshape(-1, C, kh, kw)  # 12, C, kh, kw
        conv.weight.copy_(torch.cat([filters, -filters]))


@MODELS.register("improved")
def improved() -> CifarNet:
    """Whitened 2x2 stem + three VGG-style BN/GELU groups (64, 256, 256); see ``Improved``."""
    return Improved()


def build(name: str) -> CifarNet:
    """A freshly initialized network from the registry (unknown names raise ValueError)."""
    return MODELS.get(name)()


def parameter_count(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
