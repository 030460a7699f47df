"""Image transforms for attacks: the four robustness checks and the random EOT distribution.

Robustness set (deterministic, on (B, 3, H, W) images in [0, 1], output the same size):

* ``flip``: horizontal mirror (exact, no interpolation);
* ``crop``: the centre crop keeping 80% of the area (each side × √0.8 ≈ 0.894), resized back;
* ``rotate``: 30° counter-clockwise about the centre, bilinear, corners filled with black;
* ``grayscale``: ITU-R 601 luma replicated to 3 equal channels.

:class:`RandomTransforms` is the Expectation-over-Transformation distribution: a random
mirror, crop, scale change and rotation combined into one affine warp, and random grayscale,
all differentiable and batched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from cnnlab.registry import Registry

Transform = Callable[[torch.Tensor], torch.Tensor]

CROP_AREA = 0.8  # fraction of the image area the robustness crop keeps
ROTATION_DEG = 30.0  # the robustness rotation, counter-clockwise
LUMA = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights

TRANSFORMS: Registry[Transform] = Registry("robustness transform")


@TRANSFORMS.register("flip")
def hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def crop_box(height: int, width: int, area: float = CROP_AREA) -> tuple[int, int]:
    """(h, w) of the centred crop keeping ``area`` of the image, same aspect ratio."""
    side = math.sqrt(area)
    return max(1, round(height * side)), max(1, round(width * side))


@TRANSFORMS.register("crop")
def center_crop(x: torch.Tensor) -> torch.Tensor:
    H, W = x.shape[-2:]
    h, w = crop_box(H, W)
    return TF.resize(TF.center_crop(x, [h, w]), [H, W], interpolation=InterpolationMode.BILINEAR,
                     antialias=True).clamp(0, 1)


@TRANSFORMS.register("rotate")
def rotate(x: torch.Tensor) -> torch.Tensor:
    return TF.rotate(x, ROTATION_DEG, interpolation=InterpolationMode.BILINEAR, fill=[0.0]).clamp(0, 1)


@TRANSFORMS.register("grayscale")
def grayscale(x: torch.Tensor) -> torch.Tensor:
    return TF.rgb_to_grayscale(x, num_output_channels=3)


def robustness_transforms() -> dict[str, Transform]:
    """The four robustness transforms by name, in the order they are reported."""
    return {name: TRANSFORMS.get(name) for name in TRANSFORMS.names()}


@dataclass
class RandomTransforms:
    """The EOT distribution; ``sample(x, n)`` returns n random transforms of each image.

    Ranges cover the robustness set with a margin (rotation up to 35° either way, crops down to
    70% of the area), so an attack averaged over them survives each fixed check.
    """

    flip_p: float = 0.5  # probability of a horizontal mirror
    crop_area: tuple[float, float] = (0.7, 1.0)  # fraction of the area kept, placed at random
    scale: tuple[float, float] = (0.9, 1.1)  # zoom factor (> 1 enlarges)
    max_rotation_deg: float = 35.0  # uniform in [-max, max]
    gray_p: float = 0.25  # probability of grayscale

    def affine(self, n: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """(n, 2, 3) matrices mapping output to input coordinates for ``F.affine_grid``."""
        u = lambda lo, hi: torch.empty(n, device=device).uniform_(lo, hi)  # noqa: E731
        zoom = u(*self.crop_area).sqrt() / u(*self.scale)  # n: < 1 samples a smaller region
        angle = torch.deg2rad(u(-self.max_rotation_deg, self.max_rotation_deg))  # n
        flip = torch.where(torch.rand(n, device=device) < self.flip_p, -1.0, 1.0)  # n
        cos, sin = angle.cos(), angle.sin()
        # Rotation in pixel units: normalized coords are scaled by (W/2, H/2), so R becomes
        # D^-1 R D with D = diag(W, H) (the halves cancel).
        a = width / height
        m = torch.zeros(n, 2, 3, device=device)
        m[:, 0, 0] = cos * flip * zoom
        m[:, 0, 1] = -sin / a * zoom
        m[:, 1, 0] = sin * a * flip * zoom
        m[:, 1, 1] = cos * zoom
        slack = (1 - zoom).clamp_min(0)  # n: how far the crop window can move from the centre
        m[:, 0, 2] = u(-1, 1) * slack
        m[:, 1, 2] = u(-1, 1) * slack
        return m

    def sample(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """``x`` (B, 3, H, W) -> (B * n, 3, H, W): n random transforms of each image, image-major."""
        B, C, H, W = x.shape
        xs = x.repeat_interleave(n, dim=0)  # B*n, 3, H, W
        theta = self.affine(B * n, H, W, x.device)  # B*n, 2, 3
        grid = F.affine_grid(theta, [B * n, C, H, W], align_corners=False)  # B*n, H, W, 2
        out = F.grid_sample(xs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        gray = (out * torch.tensor(LUMA, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)  # B*n, 1, H, W
        use_gray = (torch.rand(B * n, 1, 1, 1, device=x.device) < self.gray_p).float()
        return out * (1 - use_gray) + gray.expand_as(out) * use_gray
