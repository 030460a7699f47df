"""Show feature maps of an image from an early, a middle and a late layer of a CNN.

The layers are picked from the model's traced graph (torchvision's feature-extraction
utilities): the blocks at 15%, 50% and 100% of the network's depth. In each, the most
interesting channels are chosen by a documented score (not dead, high contrast, spatially
structured, not near-duplicates; see ``cnnlab.featuremaps.select``). Each map is normalized
to [0, 1] on its own. Writes one figure per stage, a combined figure, ``maps.npz`` with the
normalized maps, and ``featuremaps.json`` with every choice and score.

Example: cnnlab featuremaps peppers.png --per-stage 5
         cnnlab featuremaps cat.jpg --layers features.2 features.7 features.16 --channels 0,1,2
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnlab.featuremaps.extract import STAGE_FRACTIONS, candidate_layers, extract, pick_stages
from cnnlab.featuremaps.select import SCORE_DEFINITION, choose_channels, normalize01, score_channels
from cnnlab.images import default_photo, load_image
from cnnlab.models.pretrained import DEFAULT_MODEL, load_pretrained
from cnnlab.options import RunOptions, arg
from cnnlab.plots.featuremaps import Panel, featuremap_rows
from cnnlab.runs import atomic_write, new_run_dir, resolve_device, save_figure, seed_everything, write_json, write_run_metadata

log = logging.getLogger(__name__)
STAGES = tuple(STAGE_FRACTIONS)


def _channel_list(text: str) -> list[int]:
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise ValueError(f"--channels takes comma-separated channel numbers, got {text!r}") from None


@dataclass(kw_only=True)
class Config(RunOptions):
    image: Path | None = arg(None, "image file (default: the peppers photo when present, else a built-in photo)",
                             positional=True, metavar="IMAGE")
    model: str = arg(DEFAULT_MODEL, "torchvision classifier, optionally with weights (resnet50:IMAGENET1K_V2)")
    per_stage: int = arg(5, "channels to show per layer")
    layers: list[str] = arg(help="override the three layers (early middle late), as graph module names",
                            default_factory=list, metavar="LAYER")
    channels: list[str] = arg(help="override the channels: one comma list for all layers, or one per layer",
                              default_factory=list, metavar="C,C,...")
    max_similarity: float = arg(0.9, "skip channels correlating above this with one already chosen")

    def __post_init__(self) -> None:
        if not 1 <= self.per_stage <= 64:
            raise ValueError(f"--per-stage must be between 1 and 64, got {self.per_stage}")
        if self.layers and len(self.layers) != 3:
            raise ValueError(f"--layers takes exactly three names (early middle late), got {len(self.layers)}")
        if len(self.channels) not in (0, 1, 3):
            raise ValueError("--channels takes one comma list (for all layers) or three (one per layer)")
        for text in self.channels:
            _channel_list(text)
        if not 0 < self.max_similarity <= 1:
            raise ValueError(f"--max-similarity must be in (0, 1], got {self.max_similarity}")


@dataclass
class StageChoice:
    stage: str
    layer: str
    depth: int
    depth_fraction: float
    shape: list[int]  # C, H, W
    dead_channels: int
    channels: list[dict]  # channel, score, contrast, structure, dead
    chosen_by: str  # "score" or "user"


@dataclass
class Result:
    image: str
    model: str
    n_blocks: int
    score_definition: str
    stages: list[StageChoice] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)
    run_dir: Path | None = None


def run(config: Config) -> Result:
    seed_everything(config.seed, config.deterministic)
    device = resolve_device(config.device)
    run_dir = new_run_dir("featuremaps", config.out)
    write_run_metadata(run_dir, config, device, config.seed)
    if config.image is not None:
        img, image_name = load_image(config.image), str(config.image)
    else:
        path, img, name = default_photo()
        image_name = str(path) if path else f"built-in:{name}"
    model = load_pretrained(config.model, device=device)
    net = model.net

    blocks = candidate_layers(net)
    by_name = {b.name: b for b in blocks}
    if config.layers:
        unknown = [n for n in config.layers if n not in by_name]
        if unknown:
            raise ValueError(f"unknown layer(s) {unknown}; candidates: {', '.join(by_name)}")
        stages = dict(zip(STAGES, (by_name[n] for n in config.layers)))
        if not stages["early"].depth < stages["middle"].depth < stages["late"].depth:
            raise ValueError("--layers must be given in depth order: early, middle, late")
    else:
        stages = pick_stages(blocks)

    x = model.preprocess(img).unsqueeze(0).to(device)  # 1, 3, 224, 224 in [0, 1]
    maps = extract(net, model.normalize(x), [s.name for s in stages.values()])
    shown = x[0].permute(1, 2, 0).cpu().numpy()  # H, W, 3: what the network sees

    result = Result(image_name, model.spec.label, len(blocks), SCORE_DEFINITION, run_dir=run_dir)
    rows, arrays = [], {}
    for i, (stage, layer) in enumerate(stages.items()):
        fmap = maps[layer.name][0].float().cpu()  # C, H, W
        C, H, W = fmap.shape
        scores = score_channels(fmap)
        if config.channels:
            chans = _channel_list(config.channels[0 if len(config.channels) == 1 else i])
            bad = [c for c in chans if not 0 <= c < C]
            if bad:
                raise ValueError(f"channel(s) {bad} out of range for {layer.name} ({C} channels)")
            chosen, how = [scores[c] for c in chans], "user"
        else:
            chosen, how = choose_channels(fmap, config.per_stage, config.max_similarity), "score"
        norm = normalize01(fmap[[c.channel for c in chosen]])  # k, H, W in [0, 1]
        arrays[stage] = norm.numpy()
        arrays[f"{stage}_channels"] = np.array([c.channel for c in chosen])
        panels = [Panel(norm[j].numpy(), f"{layer.name} ch {c.channel}\nscore {c.score:.2f}") for j, c in enumerate(chosen)]
        label = f"{stage}: {layer.name}"
        rows.append((label, panels))
        result.stages.append(StageChoice(stage, layer.name, layer.depth, round(layer.fraction, 3), [C, H, W],
                                         sum(s.dead for s in scores), [asdict(c) for c in chosen], how))
        fig = featuremap_rows(shown, [(label, panels)])
        fig.suptitle(f"{model.spec.name}: {stage} layer {layer.name} ({C}×{H}×{W})", fontsize=9)
        result.figures[stage] = save_figure(fig, run_dir / f"stage_{stage}.png").name
        log.info("%s layer %s: channels %s", stage, layer.name, [c.channel for c in chosen])

    fig = featuremap_rows(shown, rows)
    fig.suptitle(f"{model.spec.name} feature maps (each normalized to [0, 1])", fontsize=10)
    result.figures["combined"] = save_figure(fig, run_dir / "featuremaps.png").name

    def _save_npz(p: Path) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        p.write_bytes(buf.getvalue())

    atomic_write(run_dir / "maps.npz", _save_npz)
    write_json(run_dir / "featuremaps.json", result)
    return result


def present(result: Result) -> int:
    print(f"model: {result.model}   image: {result.image}   ({result.n_blocks} candidate blocks)")
    print(f"channel score: {result.score_definition}")
    for s in result.stages:
        chans = ", ".join(f"{c['channel']} ({c['score']:.2f})" for c in s.channels)
        print(f"  {s.stage:<6s} {s.layer:<14s} depth {s.depth} ({s.depth_fraction:.0%})  "
              f"{s.shape[0]}×{s.shape[1]}×{s.shape[2]}, {s.dead_channels} dead; channels: {chans}")
    print(f"figures and featuremaps.json: {result.run_dir}")
    return 0
