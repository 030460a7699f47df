"""Image transforms for attacks: the four robustness checks and the views EOT optimizes over.

Robustness set (deterministic, on (B, 3, H, W) images in [0, 1], output the same size):

* ``flip``: horizontal mirror (exact, no interpolation);
* ``crop``: the centre crop keeping 80% of the area (each side × √0.8 ≈ 0.894), resized back;
* ``rotate``: 30° counter-clockwise about the centre, bilinear, corners filled with black;
* ``grayscale``: ITU-R 601 luma replicated to 3 equal channels.

:class:`Views` is what ``eot`` optimizes over: the identity and the four robustness transforms
exactly, plus random jitter around each, composed with the model's resize and centre crop into
one bilinear sampling at model resolution. :func:`pil_transforms` are the same four done with
PIL, for judging saved PNGs the way a user with PIL alone would.
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


@dataclass(frozen=True)
class ViewParams:
    """One geometric view in normalized coordinates: rotation (degrees, counter-clockwise), zoom
    (< 1 keeps a smaller centred region, as the 80 % crop does), mirror, shift, grayscale."""

    angle: float = 0.0
    zoom: tuple[float, float] = (1.0, 1.0)  # (x, y) fraction of the width/height sampled
    flip: bool = False
    gray: bool = False


def exact_views(height: int, width: int) -> dict[str, ViewParams]:
    """The identity and the four robustness transforms of an ``height`` × ``width`` image."""
    h, w = crop_box(height, width)
    return {"none": ViewParams(), "flip": ViewParams(flip=True), "crop": ViewParams(zoom=(w / width, h / height)),
            "rotate": ViewParams(angle=ROTATION_DEG), "grayscale": ViewParams(gray=True)}


@dataclass
class Views:
    """The views ``eot`` optimizes: every exact view of :func:`exact_views` plus ``jitter``
    random ones around them (each a base view with a small extra rotation, zoom and shift), all
    sampled in one ``grid_sample`` straight at model resolution.

    With ``resize``/``crop`` set (the model's short-side resize and centre crop), the photo is
    resized once (antialiased, like the model's own preprocessing) and each view's transform and
    the centre crop are one affine map from the crop's pixels into the resized photo; the
    transforms act on normalized coordinates, which a resize leaves unchanged, so this equals
    transforming the photo and then preprocessing it, up to interpolation. Without them the
    views keep the input's size and the caller preprocesses.
    """

    resize: int | None = None
    crop: int | None = None
    max_angle: float = 5.0  # jitter: extra rotation uniform in ±max_angle degrees
    max_zoom: float = 0.05  # jitter: zoom factor in [1 - max_zoom, 1 + max_zoom]
    max_shift: float = 0.03  # jitter: shift in ±max_shift of the half-size

    def thetas(self, params: list[ViewParams], jitter: torch.Tensor, height: int, width: int,
               window: tuple[float, float]) -> torch.Tensor:
        """(n, 2, 3) output-to-input maps for ``F.affine_grid``; ``jitter`` (n, 4) in [-1, 1]."""
        n = len(params)
        angle = torch.tensor([p.angle for p in params]) + jitter[:, 0] * self.max_angle
        zoom = 1 + jitter[:, 1] * self.max_zoom  # n
        zx = torch.tensor([p.zoom[0] for p in params]) * zoom * window[0]
        zy = torch.tensor([p.zoom[1] for p in params]) * zoom * window[1]
        flip = torch.tensor([-1.0 if p.flip else 1.0 for p in params])
        rad = torch.deg2rad(angle)
        a = width / height  # rotation in pixel units: D^-1 R D with D = diag(W, H)
        m = torch.zeros(n, 2, 3)
        m[:, 0, 0] = rad.cos() * flip * zx
        m[:, 0, 1] = -rad.sin() / a * flip * zy
        m[:, 1, 0] = rad.sin() * a * zx
        m[:, 1, 1] = rad.cos() * zy
        m[:, 0, 2] = jitter[:, 2] * self.max_shift
        m[:, 1, 2] = jitter[:, 3] * self.max_shift
        return m

    def sample(self, x: torch.Tensor, n_jitter: int = 0) -> tuple[torch.Tensor, list[str]]:
        """``x`` (B, 3, H, W) -> ((B * n, 3, h, w) views, image-major; their n names), with the
        exact views first (no jitter) and ``n_jitter`` jittered ones cycling over the bases."""
        B, C, H, W = x.shape
        base = exact_views(H, W)
        names = list(base) + [f"{k}~" for k in list(base) * (n_jitter // len(base) + 1)][:n_jitter]
        params = [base[k.rstrip("~")] for k in names]
        jitter = torch.zeros(len(names), 4)
        jitter[len(base):].uniform_(-1, 1)
        if self.resize is not None:
            x = TF.resize(x, self.resize, interpolation=InterpolationMode.BILINEAR, antialias=True)
        h, w = x.shape[-2:]
        out_h, out_w = (self.crop, self.crop) if self.crop is not None else (h, w)
        theta = self.thetas(params, jitter, h, w, (out_w / w, out_h / h)).to(x.device, x.dtype)  # n, 2, 3
        n = len(names)
        theta = theta.repeat(B, 1, 1)  # B*n: image-major
        grid = F.affine_grid(theta, [B * n, C, out_h, out_w], align_corners=False)
        out = F.grid_sample(x.repeat_interleave(n, dim=0), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
        gray = torch.tensor([p.gray for p in params], device=x.device).repeat(B).view(-1, 1, 1, 1)
        luma = (out * torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
        return torch.where(gray, luma.expand_as(out), out), names


def pil_transforms() -> dict[str, Callable]:
    """The four robustness transforms done with PIL on a PIL RGB image (what a user checking a
    saved PNG with PIL alone would do): mirror, the centred 80 % crop resized back (bilinear),
    30° counter-clockwise bilinear rotation with black corners, ITU-R 601 grayscale."""
    from PIL import Image, ImageOps

    def crop(img: Image.Image) -> Image.Image:
        W, H = img.size
        h, w = crop_box(H, W)
        top, left = int(round((H - h) / 2)), int(round((W - w) / 2))
        return img.crop((left, top, left + w, top + h)).resize((W, H), Image.Resampling.BILINEAR)

    return {"flip": ImageOps.mirror, "crop": crop,
            "rotate": lambda img: img.rotate(ROTATION_DEG, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)),
            "grayscale": lambda img: img.convert("L").convert("RGB")}
