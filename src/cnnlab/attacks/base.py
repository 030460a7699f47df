"""The attack base class: everything except the step.

An :class:`Attack` takes images in pixel space [0, 1] (normalization lives inside the model
wrapper) and target classes, and returns adversarial images inside the L∞ ball of radius ε
around them, quantized to 8 bits. It owns the boring parts:

* puts the model in ``eval()`` and freezes its parameters (``requires_grad=False``) for the
  duration, then restores every module's train/eval mode and every parameter's flag;
* moves tensors to the model's device and back;
* runs the loop: ``step`` (the subclass) proposes a new image, the base projects it onto the
  ε-ball and [0, 1], and stops an image early once its *quantized* version reaches the target
  probability threshold;
* quantizes the final image to 8 bits inside the ball and re-checks it: success is decided on
  the image that would be saved, never on the float iterate.

A subclass writes only :meth:`Attack.step` (and, for randomized attacks, may override
:meth:`Attack.stop_probability`), and declares its settings as an :class:`AttackOptions`
dataclass whose defaults are the class's ``default_options``. ``preprocess`` maps an image to
the model input; for a photo at its own resolution it is the model's differentiable resize and
centre crop, so the ε-ball is on the photo itself.

The attack loop is :meth:`Attack.perturb` in this file.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn

log = logging.getLogger(__name__)

Preprocess = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class StepOutput:
    """What one step returns: the proposed image and the target probability it saw.

    ``x_next`` (B, 3, H, W) is projected by the base afterwards. ``p_target`` (B,) is the
    probability of the target at the *current* iterate (the one the gradient was taken at),
    used as a free pre-check for early stopping; ``None`` means "always run the quantized
    check".
    """

    x_next: torch.Tensor
    p_target: torch.Tensor | None = None


@dataclass
class AttackOutput:
    """Per batch: adversarial images (8-bit valued floats in [0, 1]) and bookkeeping, all (B, ...)."""

    adversarial: torch.Tensor  # B, 3, H, W, values k/255
    p_target: torch.Tensor  # B: P(target | adversarial), on the quantized image
    steps: torch.Tensor  # B: steps taken before success or the budget ran out
    success: torch.Tensor  # B bool: p_target >= threshold (or top-1 == target when threshold is None)
    seconds: float


@dataclass(frozen=True)
class AttackOptions:
    """The settings every attack has; a subclass adds its own fields and defaults.

    ``steps`` is the step budget; ``step_size`` the per-step change in [0, 1] units (each attack
    documents its meaning), ``None`` for the attack's own rule from ε.
    """

    steps: int = 100
    step_size: float | None = 0.5 / 255

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.step_size is not None and self.step_size <= 0:
            raise ValueError(f"step size must be > 0, got {self.step_size}")


def quantize_within(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Round to the 8-bit grid while staying in the ε-ball around ``x`` and in [0, 1].

    ``x`` must itself be 8-bit valued. Rounding alone could step outside the ball when ε is
    not a whole number of grey levels, so the result is clamped to the grid points inside it.
    """
    grey = (x * 255).round()
    lo = torch.clamp(torch.ceil(grey - eps * 255 - 1e-4), min=0)
    hi = torch.clamp(torch.floor(grey + eps * 255 + 1e-4), max=255)
    return torch.minimum(torch.maximum((x_adv * 255).round(), lo), hi) / 255


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip to [x - ε, x + ε] and to [0, 1]."""
    return torch.clamp(torch.minimum(torch.maximum(x_adv, x - eps), x + eps), 0.0, 1.0)


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` with parameters frozen; every module's mode and flag restored on exit."""
    modes = {m: m.training for m in model.modules()}
    flags = {p: p.requires_grad for p in model.parameters()}
    model.eval()
    for p in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.training = training
        for p, flag in flags.items():
            p.requires_grad_(flag)


class Attack(ABC):
    """A targeted L∞ attack. Subclasses implement :meth:`step` only.

    Args:
        model: a classifier on images in [0, 1] returning logits.
        eps: the L∞ radius in [0, 1] units (2/255 = two grey levels).
        threshold: stop an image once P(target) on its quantized version reaches this;
            ``None`` runs the whole budget and counts success as top-1 == target.
        preprocess: image -> model input (e.g. ``model.preprocess_tensor``); identity if None.
        options: the attack's settings (default: ``default_options``).
        **overrides: fields of ``options`` to replace; a ``None`` value keeps the option as is.
    """

    name: str = "attack"
    precheck: float = 0.5  # the exact (quantized) stop check runs once the step's P reaches this × threshold
    default_options: AttackOptions = AttackOptions()

    def __init__(self, model: nn.Module, *, eps: float, threshold: float | None = 0.9,
                 preprocess: Preprocess | None = None, options: AttackOptions | None = None, **overrides) -> None:
        if not 0 < eps < 1:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        if threshold is not None and not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.model = model
        self.eps = float(eps)
        self.options = replace(options or self.default_options,
                               **{k: v for k, v in overrides.items() if v is not None})
        self.steps = int(self.options.steps)
        self.step_size = float(self.options.step_size if self.options.step_size is not None
                               else self.auto_step_size())
        self.threshold = threshold
        self.preprocess = preprocess or (lambda x: x)
        self.on_step: Callable[[int, torch.Tensor], None] | None = None  # progress hook
        # Indices (into the batch given to ``perturb``) of the images the current ``step`` call
        # holds, in order: a subclass with per-image state (momentum) reads its rows with it.
        self.active: torch.Tensor | None = None

    def auto_step_size(self) -> float:
        """The step size when ``options.step_size`` is None; an attack with such a rule overrides this."""
        raise ValueError(f"{self.name}: give a step size")

    # ------------------------------------------------------------------ helpers for subclasses
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Model logits for images ``x`` (B, 3, H, W) in [0, 1]."""
        return self.model(self.preprocess(x)).float()

    def log_prob_and_grad(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log P(target | x) (B,), its gradient w.r.t. x (B, 3, H, W))."""
        x = x.detach().requires_grad_(True)
        logp = torch.log_softmax(self.logits(x), dim=1).gather(1, target[:, None]).squeeze(1)  # B
        (grad,) = torch.autograd.grad(logp.sum(), x)
        return logp.detach(), grad

    @torch.no_grad()
    def target_probability(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """P(target | x) (B,) without gradients."""
        return torch.softmax(self.logits(x), dim=1).gather(1, target[:, None]).squeeze(1)

    @torch.no_grad()
    def stop_probability(self, x_q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The probability the stopping rule compares with the threshold (quantized image)."""
        return self.target_probability(x_q, target)

    # ------------------------------------------------------------------ the subclass's part
    @abstractmethod
    def step(self, x_adv: torch.Tensor, x: torch.Tensor, target: torch.Tensor, t: int) -> StepOutput:
        """Propose the next iterate from ``x_adv`` (B, 3, H, W); the base projects it."""

    def start(self, x: torch.Tensor) -> None:
        """Called once per ``perturb`` with the whole batch (B, 3, H, W), before the first step:
        a subclass resets its per-image state here."""

    # ------------------------------------------------------------------ the loop
    def _done(self, x_q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.threshold is None:
            with torch.no_grad():
                return self.logits(x_q).argmax(1) == target
        return self.stop_probability(x_q, target) >= self.threshold

    def __call__(self, images: torch.Tensor, targets: torch.Tensor | int | list[int]) -> AttackOutput:
        return self.perturb(images, targets)

    def perturb(self, images: torch.Tensor, targets: torch.Tensor | int | list[int]) -> AttackOutput:
        """Attack a batch ``images`` (B, 3, H, W), 8-bit valued in [0, 1], towards ``targets``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if images.min() < 0 or images.max() > 1:
            raise ValueError("images must be in [0, 1] (normalization happens inside the model)")
        B = images.shape[0]
        device = next(self.model.parameters()).device
        target = torch.as_tensor(targets, dtype=torch.long).reshape(-1).expand(B).clone().to(device)
        x = ((images.detach().to(device, torch.float32) * 255).round() / 255)  # the 8-bit original
        t0 = time.perf_counter()
        with frozen_eval(self.model):
            x_q, steps = self._iterate(x, target)
            p_final = self.target_probability(x_q, target)
            success = self._done(x_q, target) if self.threshold is None else p_final >= self.threshold
        seconds = time.perf_counter() - t0
        linf = (x_q - x).abs().amax().item()
        assert linf <= self.eps + 1e-6, f"internal error: L∞ {linf} > eps {self.eps}"
        return AttackOutput(x_q.to(images.device), p_final.cpu(), steps.cpu(), success.cpu(), seconds)

    def _iterate(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step the images that are not done yet until all are or the budget runs out: (the
        quantized iterates (B, 3, H, W), the steps each image took (B,))."""
        B = x.shape[0]
        self.start(x)
        x_adv, x_q = x.clone(), x.clone()
        steps = torch.zeros(B, dtype=torch.long, device=x.device)
        # threshold=None: no early stop, every image runs the whole budget.
        done = self._done(x_q, target) if self.threshold is not None else torch.zeros(B, dtype=torch.bool,
                                                                                      device=x.device)
        for t in range(self.steps):
            if done.all():
                break
            idx = (~done).nonzero().squeeze(1)
            self.active = idx
            out = self.step(x_adv[idx], x[idx], target[idx], t)
            x_adv[idx] = project(out.x_next.detach(), x[idx], self.eps)
            x_q[idx] = quantize_within(x_adv[idx], x[idx], self.eps)
            steps[idx] += 1
            self._check_done(done, idx, out.p_target, x_q, target)
            if self.on_step is not None:
                self.on_step(t + 1, done)
        self.active = None
        return x_q, steps

    def _check_done(self, done: torch.Tensor, idx: torch.Tensor, p_step: torch.Tensor | None,
                    x_q: torch.Tensor, target: torch.Tensor) -> None:
        """Update ``done`` (B,) for the stepped images ``idx`` from their quantized iterates."""
        if self.threshold is None:
            return
        check = torch.ones_like(idx, dtype=torch.bool)
        if p_step is not None:
            # The float iterate seen by the step is a free pre-check: only images near the
            # threshold pay for the exact check on their quantized version.
            check = p_step >= self.precheck * self.threshold
        if check.any():
            sub = idx[check]
            done[sub] = self._done(x_q[sub], target[sub])


class NoAttack(Attack):
    """Returns the image unchanged: the do-nothing attack every test must reject."""

    name = "none"

    def step(self, x_adv: torch.Tensor, x: torch.Tensor, target: torch.Tensor, t: int) -> StepOutput:
        return StepOutput(x_adv)
