"""``pgd``: targeted projected gradient descent with sign steps (Madry et al., 2018).

Repeat X' <- X' + α sign(∇ log P(y_fool | X')), then project onto the ε-ball and [0, 1]. This is
the usual stronger L∞ baseline: the sign step moves every pixel by α, the steepest ascent
direction for an L∞ budget. ``random_start`` starts from a uniform point in the ball.
"""

from __future__ import annotations

import torch

from cnnlab.attacks.base import Attack, StepOutput


class PGD(Attack):
    name = "pgd"
    default_steps = 100
    default_step_size = 0.5 / 255  # α: a quarter of ε = 2/255, so 4 steps cross the ball

    def __init__(self, *args, random_start: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.random_start = random_start

    def step(self, x_adv: torch.Tensor, x: torch.Tensor, target: torch.Tensor, t: int) -> StepOutput:
        if t == 0 and self.random_start:
            x_adv = (x_adv + torch.empty_like(x_adv).uniform_(-self.eps, self.eps)).clamp(0, 1)
        logp, grad = self.log_prob_and_grad(x_adv, target)  # B; B, 3, H, W
        return StepOutput(x_adv + self.step_size * grad.sign(), logp.exp())
