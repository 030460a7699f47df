"""Feature extraction: penultimate features, unit norm, input order, transform and precision."""

from __future__ import annotations

import pytest
import torch
from probe_helpers import make_folder, tiny_model
from torch.nn import functional as F

from cnnlab.data.folders import load_image_folder
from cnnlab.images import load_image
from cnnlab.probe import extract
from cnnlab.probe.extract import EvalTransform, choose_precision, extract_features


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return load_image_folder(make_folder(tmp_path_factory.mktemp("imgs"), per_class=4), seed=0)


def test_features_are_normalized_penultimate_in_input_order(folder):
    model = tiny_model()
    paths = list(folder.train.paths)
    ext = extract_features(model, paths, batch_size=3, workers=2, precision="fp32", streams=3)
    assert ext.streams == 3  # concurrent batches through one model: forward_features is per-thread
    assert ext.features.shape == (len(paths), model.feature_dim)
    torch.testing.assert_close(ext.features.norm(dim=1), torch.ones(len(paths)))
    # oracle: the model's own float preprocessing, one image at a time, then normalize
    with torch.inference_mode():
        ref = torch.cat([model.forward_features(model.preprocess(load_image(p))[None]) for p in paths])
    torch.testing.assert_close(ext.features, F.normalize(ref, dim=1), atol=1e-5, rtol=1e-5)
    # threads and batch size change nothing
    threads = torch.get_num_threads()
    again = extract_features(model, paths, batch_size=5, workers=0, precision="fp32", streams=1)
    assert torch.get_num_threads() == threads  # the caller's thread setting is restored
    torch.testing.assert_close(again.features, ext.features, atol=1e-5, rtol=1e-5)
    # the model's memory format is restored afterwards
    assert model.net[0].weight.is_contiguous()


def test_uint8_transform_matches_model_preprocess(peppers_path, mobilenet):
    transform = EvalTransform.from_model(mobilenet)
    img = load_image(peppers_path)
    torch.testing.assert_close(transform(img).float() / 255, mobilenet.preprocess(img))


def test_real_model_features_are_the_head_input(peppers_path, mobilenet):
    """1280-d for MobileNetV2, and the final Linear applied to them gives the logits."""
    ext = extract_features(mobilenet, [peppers_path, peppers_path], precision="fp32", workers=0)
    assert ext.features.shape == (2, 1280) == (2, mobilenet.head.in_features)
    x = mobilenet.preprocess(load_image(peppers_path))[None]
    with torch.inference_mode():
        raw = mobilenet.forward_features(x)
        logits = mobilenet(x)
        head_of_raw = mobilenet.head(raw)
    torch.testing.assert_close(head_of_raw, logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ext.features[0], F.normalize(raw, dim=1)[0], atol=1e-4, rtol=1e-4)
    assert ext.features.shape[1] != len(mobilenet.categories)  # not the 1000-way logits


def test_bf16_agreement_on_real_images(shared_data, mobilenet):
    from cnnlab.data.pets import load_pets

    if not extract.bf16_supported("cpu"):
        pytest.skip("CPU without bf16 support")
    paths = list(load_pets(shared_data, download=False).test.paths)
    sample = extract.calibration_sample(paths, EvalTransform.from_model(mobilenet), n=8)
    precision, agreement = choose_precision("auto", mobilenet, sample)
    assert agreement is not None and agreement.images == 8
    assert agreement.min_cosine > 0.99 and agreement.mean_cosine <= 1.0 + 1e-6
    assert precision == ("bf16" if agreement.min_cosine >= extract.MIN_COSINE else "fp32")


def test_precision_choice_falls_back(monkeypatch, folder):
    model = tiny_model()
    sample = extract.calibration_sample(list(folder.train.paths), EvalTransform.from_model(model), n=4)
    monkeypatch.setattr(extract, "bf16_supported", lambda device: False)
    assert choose_precision("auto", model, sample) == ("fp32", None)
    with pytest.raises(ValueError, match="bf16 was requested"):
        choose_precision("bf16", model, sample)
    monkeypatch.setattr(extract, "bf16_supported", lambda device: True)
    monkeypatch.setattr(extract, "MIN_COSINE", 1.01)  # impossible to meet: must fall back
    precision, agreement = choose_precision("auto", model, sample)
    assert precision == "fp32" and agreement is not None
    with pytest.raises(ValueError, match="unknown precision"):
        choose_precision("fp16", model, sample)


def test_broken_image_is_a_clear_error(tmp_path):
    from cnnlab.errors import ImageError

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="bad.jpg"):
        extract_features(tiny_model(), [bad], precision="fp32", workers=2)
