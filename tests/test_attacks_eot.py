"""EOT's views, loss, step schedule and per-image momentum; random targets; the PIL transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from cnnlab.attacks import EOT
from cnnlab.attacks.targets import random_target
from cnnlab.attacks.transforms import Views, pil_transforms, robustness_transforms
from cnnlab.images import pil_to_tensor

from test_attacks import EPS, images, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_image(h: int = 60, w: int = 90) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    x = torch.stack([torch.sin(6 * xx) * 0.5 + 0.5, yy, xx * yy])[None]
    x[..., h // 3:h // 2, w // 2:3 * w // 4] = 1  # an off-centre block: flips and rotations move it
    return x


def test_exact_views_equal_the_robustness_transforms():
    x = smooth_image()
    views, names = Views().sample(x, 0)
    ref = {"none": x, **{k: f(x) for k, f in robustness_transforms().items()}}
    assert names == list(ref)
    for i, name in enumerate(names):
        diff = (views[i] - ref[name][0]).abs()[:, 3:-3, 3:-3]  # borders: interpolation at the edge
        assert diff.mean() < 3e-3, name


def test_views_fold_the_model_resize_and_crop_into_one_sampling():
    """Transform at full size then resize + centre crop == the composed view at model size."""
    x = smooth_image(120, 180)
    views, names = Views(resize=48, crop=40).sample(x, 0)
    assert views.shape == (5, 3, 40, 40)
    pre = lambda v: TF.center_crop(TF.resize(v, 48, InterpolationMode.BILINEAR, antialias=True), 40)  # noqa: E731
    ref = {"none": x, **{k: f(x) for k, f in robustness_transforms().items()}}
    for i, name in enumerate(names):
        assert (views[i] - pre(ref[name])[0]).abs().mean() < 0.02, name
    wrong = pre(ref["rotate"].flip(-1))[0]  # a different transform is far away
    assert (views[names.index("rotate")] - wrong).abs().mean() > 0.05


def test_jittered_views_stay_near_their_base():
    x = smooth_image()
    torch.manual_seed(0)
    views, names = Views().sample(x, 10)
    assert names[5:] == ["none~", "flip~", "crop~", "rotate~", "grayscale~"] * 2
    for i in range(5, 15):
        base = views[names.index(names[i].rstrip("~"))]
        others = [views[j] for j in range(5) if names[j] != names[i].rstrip("~")]
        near = (views[i] - base).abs().mean()
        assert near < min((views[i] - o).abs().mean() for o in others)
        assert near > 0  # jittered, not a copy


def test_margin_loss_stops_pulling_on_views_past_kappa():
    model = tiny_model()
    eot = EOT(model, eps=EPS, kappa=2.0)
    logits = torch.tensor([[[9.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], requires_grad=True)  # 1 image, 2 views
    objective, p = eot.objective(logits, torch.tensor([0]))
    (grad,) = torch.autograd.grad(objective.sum(), logits)
    assert torch.all(grad[0, 0] == 0)  # the view already past κ: no push
    assert grad[0, 1, 0] > 0 and grad[0, 1, 1] < 0  # the failing view: target up, best other down
    assert p.shape == (1, 2) and p[0, 0] > 0.99


def test_step_size_decays_from_alpha():
    eot = EOT(tiny_model(), eps=EPS, steps=50, decay=0.1)
    sizes = [eot.step_size_at(t) for t in range(50)]
    assert sizes[0] == pytest.approx(EPS / 4) and sizes[-1] == pytest.approx(EPS / 40)
    assert all(a >= b for a, b in zip(sizes, sizes[1:]))
    assert EOT(tiny_model(), eps=EPS, step_size=1 / 255).step_size == pytest.approx(1 / 255)


def test_momentum_is_kept_per_image_when_the_active_set_shrinks():
    """Image 1's momentum must carry on after image 0 has finished and left the active set."""
    model = tiny_model().eval()
    x = images(2)
    target = torch.tensor([3, 5])
    eot = EOT(model, eps=EPS, samples=0, momentum=0.9)  # no jitter: the steps are deterministic
    eot.start(x)
    eot.active = torch.tensor([0, 1])
    eot.step(x, x, target, 0)
    v0, v1 = eot._velocity[0].clone(), eot._velocity[1].clone()
    assert v1.abs().sum() > 0
    eot.active = torch.tensor([1])  # image 0 is done
    eot.step(x[1:], x[1:], target[1:], 1)
    fresh = EOT(model, eps=EPS, samples=0, momentum=0.0)  # the plain normalized gradient
    fresh.start(x[1:])
    fresh.active = torch.tensor([0])
    fresh.step(x[1:], x[1:], target[1:], 1)
    torch.testing.assert_close(eot._velocity[1], 0.9 * v1 + fresh._velocity[0])
    assert torch.equal(eot._velocity[0], v0)  # the finished image's row is left alone


def test_random_target_avoids_the_clean_top5_and_follows_the_seed():
    p = np.random.default_rng(1).dirichlet(np.ones(1000))
    top5 = set(np.argsort(-p)[:5].tolist())
    draws = [random_target(p, np.random.default_rng(s)) for s in range(300)]
    assert all(t not in top5 and set(ex) == top5 for t, ex in draws)
    assert len({t for t, _ in draws}) > 200  # spread over the classes, not a fixed pick
    assert random_target(p, np.random.default_rng(7)) == random_target(p, np.random.default_rng(7))


def test_pil_transforms_match_the_tensor_transforms():
    arr = (smooth_image(60, 90)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    img = Image.fromarray(arr)
    x = pil_to_tensor(img)[None]
    for name, f in pil_transforms().items():
        out = pil_to_tensor(f(img))
        assert out.shape == x.shape[1:], name
        ref = robustness_transforms()[name](x)[0]
        assert (out - ref).abs()[:, 3:-3, 3:-3].mean() < 0.02, name
    assert F.mse_loss(pil_to_tensor(pil_transforms()["flip"](img)), x[0].flip(-1)) == 0


def test_price_of_robustness_curve_and_smallest_eps():
    from pathlib import Path

    from cnnlab.attacks.robustness import Item, price_of_robustness

    survives = {("pgd", 2): {"a": False, "b": False}, ("pgd", 8): {"a": True, "b": False},
                ("eot", 2): {"a": True, "b": False}, ("eot", 4): {"a": True, "b": True}}
    items, summary = [], {}
    for (method, eps), by_photo in survives.items():
        for photo, ok in by_photo.items():
            label = f"{method} {eps}/255: {photo}"
            items.append(Item(label, Path(f"{label}.png"), "m", False, 1, 0, method, float(eps), photo))
            summary[label] = {"all_four": ok}
    curve, min_eps = price_of_robustness(items, summary)
    assert curve == {"pgd": {"2": 0.0, "8": 0.5}, "eot": {"2": 0.5, "4": 1.0}}
    assert min_eps == {"pgd": {"a": 8.0, "b": None}, "eot": {"a": 2.0, "b": 4.0}}


def test_robustness_grid_pages_are_a4_legible():
    from cnnlab.attacks.robustness import PAGE_ROWS
    from cnnlab.plots.attacks import RobustnessCell, robustness_grid, survival_vs_eps

    cell = RobustnessCell(np.zeros((30, 40, 3)), "Granny Smith apple 97%", True)
    fig = robustness_grid([(f"eot 2/255: photo{i}", [cell] * 5) for i in range(PAGE_ROWS)], ["none", "flip", "crop",
                                                                                               "rotate", "grayscale"])
    width, height = fig.get_size_inches()
    assert width <= 7.3 and height <= 10.5  # prints at scale 1 on an A4 page's text block
    fig.canvas.draw()
    titles = [ax.title for ax in fig.axes]
    assert all(t.get_fontsize() >= 8 for t in titles)
    assert all(max(len(line) for line in t.get_text().split("\n")) <= 18 for t in titles)
    assert len(survival_vs_eps({"pgd": {"1": 0.0, "2": 0.25}, "eot": {"1": 0.5, "2": 1.0}}).axes[0].lines) == 2
