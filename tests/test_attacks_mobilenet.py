"""The real MobileNetV2 on peppers, a few steps only: the same invariants as on the tiny model,
at the photo's own resolution, and the `attack` and `robustness` verbs end to end."""

from __future__ import annotations

import pytest
import torch

from cnnlab.attacks import PGD, NoAttack
from cnnlab.images import load_image, pil_to_tensor
from cnnlab.runs import read_json

from test_attacks import check_attack

SHUTTLE = 812


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def peppers(peppers_path):
    return pil_to_tensor(load_image(peppers_path))[None]  # 1, 3, 384, 512


def test_pgd_on_peppers_at_photo_resolution(mobilenet, peppers):
    attack = PGD(mobilenet, eps=2 / 255, steps=2, step_size=1 / 255, threshold=None,
                 preprocess=mobilenet.preprocess_tensor)
    target = torch.tensor([SHUTTLE])
    adv = check_attack(attack, peppers, target, min_gain=100.0)
    assert adv.shape == peppers.shape  # the photo itself, not the 224 crop
    assert ((adv - peppers).abs() * 255).round().max() == 2  # exactly the budget, in grey levels
    assert mobilenet.training is False


def test_noop_attack_fails_on_mobilenet(mobilenet, peppers):
    noop = NoAttack(mobilenet, eps=2 / 255, steps=1, threshold=None, preprocess=mobilenet.preprocess_tensor)
    with pytest.raises(AssertionError, match="did not rise"):
        check_attack(noop, peppers, torch.tensor([SHUTTLE]))


def test_attack_and_robustness_verbs_on_peppers(peppers_path, tmp_path):
    from cnnlab.attacks import robustness
    from cnnlab.attacks.run import Config, run

    result = run(Config(images=[peppers_path], target=["space shuttle"], true_label=["bell pepper"], eps="2/255",
                        method="pgd", steps=8, out=tmp_path / "attack", quiet=True))
    (r,) = result.images
    assert r.clean_name == "bell pepper" and r.clean_correct and r.clean_prob > 0.9
    assert r.target == SHUTTLE and r.p_target > 1e4 * r.p_target_clean
    assert r.linf_grey <= 2 and r.png_exact and (r.width, r.height) == (512, 384)
    assert r.psnr > 40 and 0.95 < r.ssim < 1 and 1 <= r.steps <= 8
    assert r.success and r.adv_class == SHUTTLE and r.p_target >= 0.9  # the saved PNG reaches the target
    # What is saved is what was measured: reload the PNG and classify it again.
    adv = pil_to_tensor(load_image(result.run_dir / r.adversarial_png))
    orig = pil_to_tensor(load_image(peppers_path))
    assert adv.shape == orig.shape and (adv - orig).abs().max() * 255 <= 2 + 1e-4
    for name in ("config.json", "env.json", "attack.json", "attack.png", r.original_png):
        assert (result.run_dir / name).is_file(), name
    saved = read_json(result.results_json)
    assert saved["images"][0]["p_target"] == pytest.approx(r.p_target)
    assert saved["eps_grey"] == pytest.approx(2.0)

    rob = robustness.run(robustness.Config(inputs=[result.run_dir], out=tmp_path / "rob", quiet=True))
    assert rob.transforms == ["none", "flip", "crop", "rotate", "grayscale"]
    rows = {row.transform: row for row in rob.rows}
    assert rows["none"].p_target == pytest.approx(r.p_target, abs=1e-4)
    assert rows["none"].target_survives == (r.adv_class == SHUTTLE)
    assert all(row.p_original is not None for row in rob.rows)
    assert (rob.run_dir / "robustness.json").is_file() and rob.figure.is_file()


def test_attack_random_target_is_seeded_outside_the_clean_top5(peppers_path, mobilenet, tmp_path):
    from cnnlab.attacks.run import Config, run

    def attack(seed: int, name: str):
        return run(Config(images=[peppers_path], target=["Random"], method="pgd", steps=1, seed=seed,
                          out=tmp_path / name, quiet=True))

    first, again, other = attack(3, "a"), attack(3, "b"), attack(4, "c")
    with torch.no_grad():
        p = torch.softmax(mobilenet(mobilenet.preprocess_tensor(
            pil_to_tensor(load_image(peppers_path))[None])).float(), 1)[0]
    top5 = p.topk(5).indices.tolist()
    saved = read_json(first.results_json)
    image = saved["images"][0]
    assert image["target_random"] and sorted(image["target_excluded"]) == sorted(top5)
    assert image["target"] not in top5 and saved["target_draw"]["seed"] == 3
    assert again.images[0].target == first.images[0].target  # the same seed draws the same target
    assert other.images[0].target != first.images[0].target  # seeds 3 and 4 draw different classes
