"""``ascent``: the classic rule, gradient ascent on the target probability.

Start from X' = X and repeat X' <- X' + λ ∂P(y_fool | X')/∂X', then clip X' to [X - ε, X + ε]
and to [0, 1]; stop when P(y_fool | X') reaches the threshold (0.9) or after ``steps``.

The direction is exactly ∂P/∂X'. Its size, though, spans ten orders of magnitude (about 1e-9
when the target is at P = 1e-7, about 1 near the end), so no fixed λ works from start to
finish. The gradient is therefore scaled to unit L∞ norm per image, which makes λ the largest
change of any pixel in one step, in [0, 1] units (0.5/255 = half a grey level by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cnnlab.attacks.base import Attack, AttackOptions, StepOutput


@dataclass(frozen=True)
class AscentOptions(AttackOptions):
    steps: int = 200  # small steps: 4 of them to cross a 2/255 ball once
    step_size: float | None = 0.5 / 255  # λ: the largest per-pixel change per step


class Ascent(Attack):
    name = "ascent"
    default_options = AscentOptions()

    def step(self, x_adv: torch.Tensor, x: torch.Tensor, target: torch.Tensor, t: int) -> StepOutput:
        xg = x_adv.detach().requires_grad_(True)
        prob = torch.softmax(self.logits(xg), dim=1).gather(1, target[:, None]).squeeze(1)  # B
        (grad,) = torch.autograd.grad(prob.sum(), xg)  # B, 3, H, W: ∂P(target)/∂X'
        scale = grad.flatten(1).abs().amax(1).clamp_min(1e-30).view(-1, 1, 1, 1)  # B, 1, 1, 1
        return StepOutput(x_adv + self.step_size * grad / scale, prob.detach())
