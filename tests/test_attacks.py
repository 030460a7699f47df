"""Attack invariants on a tiny model: the ε-ball, [0, 1], 8-bit output, P(target) rises, the
model's mode and requires_grad flags come back; oracle steps for pgd and ascent; a do-nothing
attack fails the same checks."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.attacks import ATTACKS, EOT, PGD, Ascent, Attack, NoAttack, project, quantize_within
from cnnlab.attacks.base import StepOutput
from cnnlab.attacks.transforms import Views

EPS = 8 / 255


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0) -> nn.Module:
    """A small CNN on (B, 3, 16, 16) images with BatchNorm and Dropout (modes matter)."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    with torch.no_grad():  # sharper than the default init, so small perturbations matter
        net[0].weight.mul_(4)
        net[3].weight.mul_(4)
        net[-1].weight.mul_(8)
    return net


def images(b: int = 2, size: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, size, size), generator=g).float() / 255  # 8-bit valued


def p_target(model: nn.Module, x: torch.Tensor, target: torch.Tensor, preprocess=None) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        logits = model(preprocess(x) if preprocess else x)
        return torch.softmax(logits, 1).gather(1, target[:, None]).squeeze(1)


def check_attack(attack: Attack, x: torch.Tensor, target: torch.Tensor, min_gain: float = 2.0) -> torch.Tensor:
    """The invariants every attack must satisfy; returns the adversarial batch."""
    model = attack.model
    saved = ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])
    try:
        return _check_attack(attack, model, x, target, min_gain)
    finally:  # the model may be a shared fixture: leave it as it was
        for m, mode in zip(model.modules(), saved[0]):
            m.training = mode
        for p, flag in zip(model.parameters(), saved[1]):
            p.requires_grad_(flag)


def _check_attack(attack: Attack, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                  min_gain: float) -> torch.Tensor:
    model.train()  # the attack must switch to eval and back
    frozen = [p for i, p in enumerate(model.parameters()) if i % 2 == 0]
    for p in frozen:
        p.requires_grad_(False)  # a mix of flags, restored exactly
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    before = p_target(model, x, target, attack.preprocess)
    model.train()

    out = attack(x, target)
    adv = out.adversarial

    assert [m.training for m in model.modules()] == modes, "train/eval mode not restored"
    assert [p.requires_grad for p in model.parameters()] == flags, "requires_grad flags not restored"
    assert all(p.grad is None for p in model.parameters()), "the attack left parameter gradients"
    assert adv.shape == x.shape and adv.dtype == torch.float32
    assert (adv - x).abs().max() <= attack.eps + 1e-6, "outside the ε-ball"
    assert adv.min() >= 0 and adv.max() <= 1, "outside [0, 1]"
    assert torch.equal((adv * 255).round() / 255, adv), "not 8-bit valued"
    after = p_target(model, adv, target, attack.preprocess)
    assert torch.allclose(after, out.p_target, atol=1e-5), "reported P(target) is not the one of the output"
    assert (after > min_gain * before).all(), f"P(target) did not rise: {before.tolist()} -> {after.tolist()}"
    assert ((adv - x).abs().amax(dim=(1, 2, 3)) > 0).all(), "the image was not changed"
    model.eval()
    return adv


@pytest.fixture
def batch():
    model = tiny_model()
    x = images()
    with torch.no_grad():
        clean = model.eval()(x).argmin(1)  # the least likely class: a hard target
    return model, x, clean


@pytest.mark.parametrize("name", ["ascent", "pgd", "eot"])
def test_attack_invariants_tiny_model(batch, name):
    model, x, target = batch
    cls = ATTACKS.get(name)
    extra = {"samples": 4} if name == "eot" else {}
    attack = cls(model, eps=EPS, steps=15, step_size=2 / 255, threshold=None, **extra)
    # EOT maximizes the average over transforms, so the untransformed gain is smaller.
    check_attack(attack, x, target, min_gain=1.2 if name == "eot" else 2.0)


def test_noop_attack_fails_the_same_checks(batch):
    model, x, target = batch
    with pytest.raises(AssertionError, match="did not rise|not changed"):
        check_attack(NoAttack(model, eps=EPS, steps=3, threshold=None), x, target)


def test_attack_ignoring_the_ball_fails_the_checks(batch):
    """A subclass that bypasses projection would be caught: the base class projects anyway."""

    class Wild(Attack):
        def step(self, x_adv, x, target, t):
            return StepOutput(x_adv + 0.5)

    model, x, target = batch
    out = Wild(model, eps=EPS, steps=2, threshold=None)(x, target)
    assert (out.adversarial - x).abs().max() <= EPS + 1e-6
    assert out.adversarial.max() <= 1


def test_pgd_step_matches_hand_computation():
    """One step on a linear model: ∇ log softmax_t(Wx + b) = W_t − Σ_j p_j W_j, by hand in NumPy."""
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    x = images(1, 4)
    W, b = lin[1].weight.detach().double().numpy(), lin[1].bias.detach().double().numpy()
    xv = x.double().numpy().reshape(-1)
    z = W @ xv + b
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    t = 3
    grad = W[t] - p @ W
    alpha, eps = 1 / 255, 3 / 255  # whole grey levels: the 8-bit rounding is exact
    expected = np.clip(np.clip(xv + alpha * np.sign(grad), xv - eps, xv + eps), 0, 1)
    out = PGD(lin, eps=eps, steps=1, step_size=alpha, threshold=None)(x, t)
    np.testing.assert_allclose(out.adversarial.double().numpy().reshape(-1), expected, atol=1e-6)
    assert out.steps.item() == 1


def test_ascent_step_is_the_normalized_probability_gradient():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    x = images(1, 4)
    t = 2
    xg = x.clone().requires_grad_(True)
    prob = torch.softmax(lin(xg), 1)[0, t]
    (g,) = torch.autograd.grad(prob, xg)  # ∂P/∂X by autograd, independent of the attack code
    lam, eps = 4 / 255, 4 / 255
    expected = quantize_within(project(x + lam * g / g.abs().max(), x, eps), x, eps)
    out = Ascent(lin, eps=eps, steps=1, step_size=lam, threshold=None)(x, t)
    assert torch.equal(out.adversarial, expected)
    assert (out.adversarial - x).abs().max() > 0


def test_threshold_stops_early_and_reports_success(batch):
    model, x, _ = batch
    with torch.no_grad():
        target = model.eval()(x).argsort(1)[:, -2]  # the runner-up: easy to reach
    out = PGD(model, eps=32 / 255, steps=200, step_size=2 / 255, threshold=0.5)(x, target)
    assert out.success.all()
    assert (out.p_target >= 0.5).all()
    assert (out.steps < 200).all(), "did not stop early"


def test_quantize_within_respects_fractional_eps():
    x = images(1, 8)
    eps = 0.01  # 2.55 grey levels: rounding alone could reach 3
    noisy = project(x + torch.empty_like(x).uniform_(-1, 1), x, eps)
    q = quantize_within(noisy, x, eps)
    assert (q - x).abs().max() <= eps + 1e-7
    assert torch.equal((q * 255).round() / 255, q)
    q2 = quantize_within(project(x + 1, x, 2 / 255), x, 2 / 255)
    grey = ((q2 - x) * 255).round()
    assert grey.max() == 2 or (x * 255).round().min() >= 254  # exactly two grey levels where room


def test_attack_rejects_bad_inputs(batch):
    model, x, target = batch
    for eps in (0, 1, -0.1):
        with pytest.raises(ValueError, match="eps"):
            PGD(model, eps=eps)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        PGD(model, eps=EPS, steps=1)(x * 2, target)
    with pytest.raises(ValueError, match="B, 3, H, W"):
        PGD(model, eps=EPS, steps=1)(x[0], target)


def test_registry_lists_attacks():
    assert {"ascent", "pgd", "eot"} <= set(ATTACKS.names())
    with pytest.raises(ValueError, match="ascent"):
        ATTACKS.get("fgsm-typo")


def test_eot_views_are_the_exact_transforms_then_jitter(batch):
    model, x, target = batch
    attack = EOT(model, eps=EPS, steps=1, samples=5, threshold=None)
    logits = attack.view_logits(x, 5)
    assert logits.shape == (2, 10, 10) and torch.isfinite(logits).all()
    views, names = attack.views.sample(x, 5)
    assert names[:5] == ["none", "flip", "crop", "rotate", "grayscale"] and len(names) == 10
    torch.testing.assert_close(views.view(2, 10, *x.shape[1:])[:, 0], x, atol=1e-5, rtol=0)
    torch.testing.assert_close(views.view(2, 10, *x.shape[1:])[:, 1], x.flip(-1), atol=1e-5, rtol=0)
    assert math.isclose(attack.step_size, EPS / 4)  # α = ε/4 unless given


def test_no_threshold_runs_the_whole_budget(batch):
    model, x, _ = batch
    with torch.no_grad():
        target = model.eval()(x).argmax(1)  # already top-1: a threshold run would stop at once
    out = PGD(model, eps=EPS, steps=4, step_size=1 / 255, threshold=None)(x, target)
    assert out.steps.tolist() == [4, 4] and out.success.all()
    out = PGD(model, eps=EPS, steps=4, step_size=1 / 255, threshold=0.05)(x, target)
    assert out.steps.tolist() == [0, 0] and out.success.all()


def test_eot_stops_only_when_robust(batch):
    model, x, target = batch
    strict = EOT(model, eps=EPS, steps=1, samples=3, robust_threshold=0.99)
    assert (strict.stop_probability(x, target) == 0).all()  # not robust yet: keep going
    lax = EOT(model, eps=EPS, steps=1, samples=3, robust_threshold=1e-9)
    torch.testing.assert_close(lax.stop_probability(x, target), lax.target_probability(x, target))


class _HalfBlank(Views):
    """Views of an image: the image itself, then blank (all-zero) images."""

    def sample(self, x: torch.Tensor, n_jitter: int = 0):
        n = 5 + n_jitter
        out = x.repeat_interleave(n, dim=0).clone()
        out.view(x.shape[0], n, *x.shape[1:])[:, 1:] = 0
        return out, ["none"] * n


def test_eot_stop_needs_every_transform_not_the_mean(batch):
    """One bad transform in the draw keeps EOT going even when the mean over the draw passes."""
    model, x, target = batch
    eot = EOT(model, eps=EPS, steps=1, samples=2, views=_HalfBlank())
    eot.robust_probabilities = lambda xq, t: torch.softmax(eot.view_logits(xq, 2), 2)[
        torch.arange(len(t)), :, t]  # the views alone: one plain, six blank
    with torch.no_grad():
        p_plain = eot.target_probability(x, target)  # B
        p_blank = eot.target_probability(torch.zeros_like(x), target)  # B
    # The stop check sees 7 views: the plain image and six blank ones. Per image, a bar between
    # the worst of them and their mean: a mean rule would pass it, the worst case not.
    lo = torch.minimum(p_plain, p_blank)
    mean = (p_plain + 6 * p_blank) / 7
    assert (mean > lo).all()
    for i in range(x.shape[0]):
        eot.options = replace(eot.options, robust_threshold=float((lo[i] + mean[i]) / 2))
        assert eot.stop_probability(x[i:i + 1], target[i:i + 1]).item() == 0  # the worst one decides
        eot.options = replace(eot.options, robust_threshold=float(lo[i]) * 0.999)
        assert eot.stop_probability(x[i:i + 1], target[i:i + 1]).item() > 0
