"""``pgd``: targeted projected gradient descent with sign steps (Madry et al., 2018).

Repeat X' <- X' + α sign(∇ log P(y_fool | X')), then project onto the ε-ball and [0, 1]. This is
the usual stronger L∞ baseline: the sign step moves every pixel by α, the steepest ascent
direction for an L∞ budget. ``random_start`` starts from a uniform point in the ball.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cnnlab.attacks.base import Attack, AttackOptions, StepOutput


@dataclass(frozen=True)
class PGDOptions(AttackOptions):
    steps: int = 100
    step_size: float | None = 0.5 / 255  # α: a quarter of ε = 2/255, so 4 steps cross the ball
    random_start: bool = False  # start from a uniform point in the ε-ball


class PGD(Attack):
    name = "pgd"
    default_options = PGDOptions()

    def step(self, x_adv: torch.Tensor, x: torch.Tensor, target: torch.Tensor, t: int) -> StepOutput:
        if t == 0 and self.options.random_start:
            x_adv = (x_adv + torch.empty_like(x_adv).uniform_(-self.eps, self.eps)).clamp(0, 1)
        logp, grad = self.log_prob_and_grad(x_adv, target)  # B; B, 3, H, W
        return StepOutput(x_adv + self.step_size * grad.sign(), logp.exp())
