"""``eot``: Expectation over Transformation (Athalye et al., arXiv 1707.07397).

Each step averages the gradient of log P(y_fool) over ``samples`` random transforms of the
current image (mirror, crop, scale, rotation, grayscale: :class:`RandomTransforms`), adds it to a
momentum buffer (μ = 0.9, as in MI-FGSM, Dong et al. 2018: it averages the noisy estimates over
steps, which plain sign steps do not) and takes a signed step, then projects onto the ε-ball. The result is adversarial in expectation over the
distribution, so it survives a flip, a crop, a rotation or grayscale, which plain attacks do
not. An image stops early only once the quantized image itself reaches the threshold and
P(target) reaches ``robust_threshold`` (0.9, the attacks' success threshold) under *every*
transform of a fresh draw of ``2 × samples``. (A mean over the draw lets a rare transform fail:
a grayscale photo's colour noise, for one, is undone by grayscale in a quarter of the draws while
the mean is already high. A low bar such as 0.5 stops at the first lucky draw, with no margin:
``benchmarks/RESULTS.md``.)
"""

from __future__ import annotations

import torch

from cnnlab.attacks.base import Attack, StepOutput
from cnnlab.attacks.transforms import RandomTransforms


class EOT(Attack):
    name = "eot"
    default_steps = 100  # each step costs `samples` forward/backward passes
    default_step_size = 0.5 / 255  # α, as for pgd
    default_samples = 8  # transforms per gradient estimate

    default_robust_threshold = 0.9  # P(target) needed under every transform of a fresh draw to stop early

    def __init__(self, *args, samples: int | None = None, distribution: RandomTransforms | None = None,
                 robust_threshold: float | None = None, momentum: float | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.robust_threshold = float(robust_threshold or self.default_robust_threshold)
        self.momentum = 0.9 if momentum is None else float(momentum)
        self._velocity: torch.Tensor | None = None
        self.samples = int(samples or self.default_samples)
        if self.samples < 1:
            raise ValueError(f"EOT needs at least 1 sample per step, got {self.samples}")
        self.distribution = distribution or RandomTransforms()

    def _expected(self, x: torch.Tensor, target: torch.Tensor, samples: int | None = None) -> torch.Tensor:
        """log P(target) under ``samples`` (default: ``self.samples``) random transforms of each
        image: (B, n)."""
        B, n = x.shape[0], samples or self.samples
        xt = self.distribution.sample(x, n)  # B*n, 3, H, W
        logp = torch.log_softmax(self.logits(xt), dim=1)  # B*n, 1000
        return logp.gather(1, target.repeat_interleave(n)[:, None]).view(B, n)  # B, n

    def objective(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what the step ascends (B,), P(target) under each sampled transform (B, n)):
        the mean log P(target) over the transforms."""
        logp = self._expected(x, target)  # B, n
        return logp.mean(1), logp.exp()

    def step_size_at(self, t: int) -> float:
        """The sign step's size at step ``t`` (constant α)."""
        return self.step_size

    def step(self, x_adv: torch.Tensor, x: torch.Tensor, target: torch.Tensor, t: int) -> StepOutput:
        xg = x_adv.detach().requires_grad_(True)
        objective, p = self.objective(xg, target)  # B; B, n
        (grad,) = torch.autograd.grad(objective.sum(), xg)  # B, 3, H, W
        # Momentum (Dong et al., 2018): a running sum of L1-normalized gradients, so that the sign
        # step follows the average over many steps' transform draws, not one noisy estimate.
        grad = grad / grad.abs().flatten(1).mean(1).clamp_min(1e-30).view(-1, 1, 1, 1)
        # (A new call, or a batch whose finished images left the active set, starts afresh.)
        if t == 0 or self._velocity is None or self._velocity.shape != grad.shape:
            self._velocity = torch.zeros_like(grad)
        self._velocity = self.momentum * self._velocity + grad
        return StepOutput(x_adv + self.step_size_at(t) * self._velocity.sign(), p.detach().mean(1))

    @torch.no_grad()
    def stop_probability(self, x_q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """P(target) on the quantized image, or 0 while P(target) under the worst transform of a
        fresh draw is still below ``robust_threshold`` (so the attack keeps strengthening it)."""
        plain = self.target_probability(x_q, target)  # B
        worst = self._expected(x_q, target, 2 * self.samples).exp().amin(1)  # B
        return torch.where(worst >= self.robust_threshold, plain, torch.zeros_like(plain))
