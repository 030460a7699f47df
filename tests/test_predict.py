"""Pretrained inference with the real MobileNetV2 weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

from cnnlab import predict
from cnnlab.cli import main
from cnnlab.models import pretrained


def test_peppers_is_a_bell_pepper_and_matches_torchvision(peppers_path, tmp_path, mobilenet):
    result = predict.run(predict.Config(images=[peppers_path], out=tmp_path / "run", top_k=5))
    (pred,) = result.predictions
    assert pred.classes[0] == "bell pepper"
    probs = pred.probabilities
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6
    assert result.model == "mobilenet_v2" and result.weights == "MobileNet_V2_Weights.IMAGENET1K_V1"

    # Independent computation: torchvision's own model, transform and category names (the file
    # read weights-only by hand: torchvision's weights= path unpickles with weights_only=False).
    weights = MobileNet_V2_Weights.IMAGENET1K_V1
    net = mobilenet_v2().eval()
    net.load_state_dict(torch.load(pretrained.resolve().cache_path, map_location="cpu", weights_only=True))
    with torch.no_grad():
        ref = torch.softmax(net(weights.transforms()(Image.open(peppers_path).convert("RGB"))[None]), 1)[0]
    p, i = ref.topk(5)
    assert pred.indices == i.tolist()
    assert pred.classes == [weights.meta["categories"][k] for k in i.tolist()]
    assert np.allclose(probs, p.tolist(), atol=1e-5)

    saved = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert saved["predictions"][0]["classes"][0] == "bell pepper"
    assert {"config.json", "env.json", "predictions.json"} <= {f.name for f in (tmp_path / "run").iterdir()}


def test_preprocess_is_the_weights_own_transform(peppers_path, mobilenet):
    img = Image.open(peppers_path).convert("RGB")
    ours = mobilenet.normalize(mobilenet.preprocess(img)[None])
    theirs = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()(img)[None]
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_bad_images_are_reported_and_the_rest_still_classified(peppers_path, tmp_path, capsys):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "cut.jpg").write_bytes(peppers_path.read_bytes()[:20_000])  # a PNG cut short
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png", optimize=True)
    code = main(["predict", str(tmp_path / "empty.jpg"), str(peppers_path), str(tmp_path / "notes.png"),
                 str(tmp_path / "cut.jpg"), str(tmp_path / "bomb.png"),
                 str(tmp_path / "missing.jpg"), "--json", "--quiet", "--out", str(tmp_path / "run")])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [p["classes"][0] for p in out["predictions"]] == ["bell pepper"]
    reasons = {e["image"].rsplit("/", 1)[-1]: e["reason"] for e in out["errors"]}
    assert reasons["empty.jpg"].startswith("empty file")
    assert reasons["notes.png"].startswith("not an image")
    assert reasons["missing.jpg"] == "no such file"
    assert reasons["cut.jpg"].startswith("truncated or corrupt")
    assert reasons["bomb.png"].startswith("image too large")
    assert len(out["errors"]) == 5


def test_folder_means_every_image_in_it(peppers_path, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    img = Image.open(peppers_path).convert("RGB")
    img.save(folder / "a.jpg", quality=95)
    img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "b.webp")
    result = predict.run(predict.Config(images=[folder], out=tmp_path / "run", top_k=1))
    assert [p.image.rsplit("/", 1)[-1] for p in result.predictions] == ["a.jpg", "b.webp"]
    assert all(p.classes[0] == "bell pepper" for p in result.predictions)


def test_unknown_model_is_a_clear_error(tmp_path, capsys):
    code = main(["predict", "x.png", "--model", "resnet5O", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown model 'resnet5O'" in err and "resnet50" in err


def test_missing_offline_weights_name_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    # Simulate "no internet": torchvision's download raises URLError (an OSError).
    import torch.hub

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    from cnnlab.errors import WeightsUnavailableError

    with pytest.raises(WeightsUnavailableError) as info:
        pretrained.load_pretrained("resnet18")
    msg = str(info.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "empty-hub") in msg and "download" in msg


def test_model_names_and_weights_tags():
    assert pretrained.resolve().weights.name == "IMAGENET1K_V1"
    assert pretrained.resolve("resnet50:IMAGENET1K_V2").weights.name == "IMAGENET1K_V2"
    with pytest.raises(ValueError, match="valid: IMAGENET1K_V1"):
        pretrained.resolve("resnet50:BOGUS")
    assert {"mobilenet_v2", "resnet50", "vgg16"} <= set(pretrained.classifier_names())


def test_penultimate_features_are_the_head_input(mobilenet):
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        feats = mobilenet.forward_features(x)
        logits = mobilenet(x)
    assert feats.shape == (2, 1280)
    assert torch.allclose(mobilenet.head(feats), logits, atol=1e-4)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="top-k"):
        predict.Config(images=["a.png"], top_k=0)
    with pytest.raises(ValueError, match="at least one image"):
        predict.Config(images=[])
