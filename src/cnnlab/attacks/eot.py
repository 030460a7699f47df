"""``eot``: Expectation over Transformation (Athalye et al., arXiv 1707.07397), aimed at the
four robustness transforms.

Each step's batch holds, for every image, the identity and the four robustness transforms
exactly (flip, 80 % centre crop, 30° rotation, grayscale), plus ``samples`` jittered copies of
them (a few degrees of rotation, a few percent of zoom and shift: :class:`Views`). On a photo the
transforms and the model's resize and centre crop are one bilinear sampling at model
resolution, so a step costs about the same on a large photo as on a small one.

The loss is a margin per view, the logit of P(target) (target logit minus the log-sum-exp of the
others), capped at ``kappa``: a view that already holds the target with a margin stops pulling,
so the step pushes on the views that fail, the worst first, instead of the mean of log P, which
saturates for targeted attacks (Zhao et al., NeurIPS 2021). The gradient enters a per-image
momentum buffer (μ = 0.9, Dong et al. 2018) and a sign step whose size decays from α to α/10 on
a cosine over the budget.

An image stops early only once its quantized version reaches P(target) >= ``robust_threshold``
(0.9, the attacks' success bar) on the plain image, under each of the four transforms done the
way ``cnnlab robustness`` does them (at the photo's resolution), and under a fresh draw of
jittered views (a margin for other interpolations, such as PIL's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cnnlab.attacks.base import Attack, AttackOptions, StepOutput
from cnnlab.attacks.transforms import Views, robustness_transforms


@dataclass(frozen=True)
class EOTOptions(AttackOptions):
    steps: int = 100  # each step costs 5 + `samples` forward/backward passes at model resolution
    step_size: float | None = None  # α, the first step's size; None: ε/4
    samples: int = 3  # jittered views per step, beside the 5 exact ones
    kappa: float = 4.0  # margin cap, the logit of P(target): 4 is P ≈ 0.98
    decay: float = 0.1  # the step size decays from α to this fraction of α (cosine)
    momentum: float = 0.9  # μ of the per-image momentum buffer
    robust_threshold: float = 0.9  # P(target) needed under every view (exact + fresh jitter) to stop early
    loss: str = "margin"  # or "logp": the mean log P(target) over the views

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples < 0:
            raise ValueError(f"EOT needs at least 0 jittered views per step, got {self.samples}")
        if self.loss not in ("margin", "logp"):
            raise ValueError(f"EOT loss must be 'margin' or 'logp', got {self.loss!r}")


class EOT(Attack):
    """EOT on the exact robustness transforms plus jittered views; ``views`` replaces the views
    built from the model's own resize and centre crop."""

    name = "eot"
    default_options = EOTOptions()
    precheck = 1.0  # the exact stop check runs once the step's worst view reaches the threshold

    def __init__(self, *args, views: Views | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.views = views or Views(*_geometry(self.model, self.preprocess))
        self._velocity: torch.Tensor | None = None  # (B, 3, H, W): one row per image of the batch

    def auto_step_size(self) -> float:
        return self.eps / 4

    # ------------------------------------------------------------------ views and loss
    def view_logits(self, x: torch.Tensor, n_jitter: int) -> torch.Tensor:
        """Logits of the exact views and ``n_jitter`` jittered ones of each image: (B, n, classes)."""
        xv, names = self.views.sample(x, n_jitter)
        inp = xv if self.views.crop is not None else self.preprocess(xv)
        return self.model(inp).float().view(x.shape[0], len(names), -1)

    def objective(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what the step ascends (B,), P(target) per view (B, n)) from logits (B, n, classes)."""
        t = target.view(-1, 1, 1).expand(-1, logits.shape[1], 1)
        logp = torch.log_softmax(logits, dim=2).gather(2, t).squeeze(2)  # B, n
        if self.options.loss == "logp":
            return logp.mean(1), logp.exp()
        others = logits.scatter(2, t, float("-inf")).logsumexp(2)  # B, n
        margin = logits.gather(2, t).squeeze(2) - others  # B, n: log P/(1 - P)
        return margin.clamp_max(self.options.kappa).mean(1), logp.exp()

    def step_size_at(self, t: int) -> float:
        """α at step ``t``: a cosine from α down to ``decay`` × α over the budget."""
        frac, decay = t / max(1, self.steps - 1), self.options.decay
        return self.step_size * (decay + (1 - decay) * 0.5 * (1 + math.cos(math.pi * frac)))

    # ------------------------------------------------------------------ the step
    def start(self, x: torch.Tensor) -> None:
        self._velocity = torch.zeros_like(x)

    def step(self, x_adv: torch.Tensor, x: torch.Tensor, target: torch.Tensor, t: int) -> StepOutput:
        xg = x_adv.detach().requires_grad_(True)
        objective, p = self.objective(self.view_logits(xg, self.options.samples), target)  # B; B, n
        (grad,) = torch.autograd.grad(objective.sum(), xg)  # B, 3, H, W
        # Momentum (Dong et al., 2018) on L1-normalized gradients, per image: only the rows of
        # the batch's buffer that belong to the images still running are read and written.
        grad = grad / grad.abs().flatten(1).mean(1).clamp_min(1e-30).view(-1, 1, 1, 1)
        idx = self.active if self.active is not None else slice(None)
        velocity = self.options.momentum * self._velocity[idx] + grad
        self._velocity[idx] = velocity
        return StepOutput(x_adv + self.step_size_at(t) * velocity.sign(), p.detach().amin(1))

    @torch.no_grad()
    def robust_probabilities(self, x_q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """P(target) (B, 5 + 5 + samples): the plain image and the four transforms as ``cnnlab
        robustness`` does them, then every exact view and a fresh draw of jittered ones."""
        B = x_q.shape[0]
        exact = torch.cat([x_q, *(f(x_q) for f in robustness_transforms().values())])  # 5B: transform-major
        p_exact = torch.softmax(self.logits(exact), 1).gather(1, target.repeat(5)[:, None]).view(5, B).T  # B, 5
        p_views = torch.softmax(self.view_logits(x_q, self.options.samples), 2)  # B, n, classes
        p_views = p_views.gather(2, target.view(-1, 1, 1).expand(-1, p_views.shape[1], 1)).squeeze(2)
        return torch.cat([p_exact, p_views], 1)

    @torch.no_grad()
    def stop_probability(self, x_q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """P(target) on the quantized image, or 0 while P(target) under the worst view of
        :meth:`robust_probabilities` is still below ``options.robust_threshold`` (so the attack goes on)."""
        p = self.robust_probabilities(x_q, target)  # B, views: column 0 is the plain image
        plain, worst = p[:, 0], p.amin(1)  # B, B
        return torch.where(worst >= self.options.robust_threshold, plain, torch.zeros_like(plain))


def _geometry(model, preprocess) -> tuple[int | None, int | None]:
    """(short-side resize, centre crop) when ``preprocess`` is the model's own tensor
    preprocessing, so :class:`Views` can fold it into its sampling; (None, None) otherwise."""
    if getattr(preprocess, "__func__", None) is not None and preprocess.__func__ is getattr(
            type(model), "preprocess_tensor", None) and getattr(preprocess, "__self__", None) is model:
        resize, crop = model.resize_size, model.crop_size
        if len(resize) == 1 and len(crop) in (1, 2) and crop[0] == crop[-1]:
            return int(resize[0]), int(crop[0])
    return None, None
