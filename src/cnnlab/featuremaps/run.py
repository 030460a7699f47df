"""Show feature maps of an image from an early, a middle and a late layer of a CNN, and what
their channels are tuned to.

The layers are picked from the model's traced graph (torchvision's feature-extraction
utilities): the blocks at 15%, 50% and 100% of the network's depth. In each, the channels
shown are chosen by a documented score (``--select score``: not dead, high contrast, spatially
structured, not near-duplicates; see ``cnnlab.featuremaps.select``) or by their class
selectivity over an image set (``--select selective``: alive on the photo and most selective,
one per preferred class while others remain; see ``cnnlab.featuremaps.selectivity``). Each map is normalized to [0, 1] on its own and also
shown upsampled (bilinear) over the photo the network saw.

Over the image set (default: the Oxford-IIIT Pet images under the data root plus the built-in
photos; ``--dataset DIR`` for any folder) every channel's top-k images are found, with the
patch under its strongest response (the unit's receptive field, computed from the layers'
kernels, strides, paddings and dilations); per-image activations are cached. Writes one figure
per stage (maps and overlays), one per stage of top patches (``tuning_<stage>.png``), a
selectivity figure, ``maps.npz`` and ``featuremaps.json`` with every choice and number.

Example: cnnlab featuremaps peppers.png --per-stage 5
         cnnlab featuremaps peppers.png --select selective --top-k 8
         cnnlab featuremaps cat.jpg --layers features.2 features.7 features.16 --channels 0,1,2 --dataset photos/
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from cnnlab.featuremaps.analysis import SetAnalysis, analyse_set, channel_record, tuning_rows
from cnnlab.featuremaps.extract import STAGE_FRACTIONS, Layer, candidate_layers, extract, pick_stages
from cnnlab.featuremaps.select import SCORE_DEFINITION, ChannelScore, choose_channels, normalize01, score_channels
from cnnlab.featuremaps.selectivity import SELECTIVITY_DEFINITION
from cnnlab.images import default_photo, load_image
from cnnlab.models.pretrained import DEFAULT_MODEL, load_pretrained
from cnnlab.options import RunOptions, arg
from cnnlab.plots.featuremaps import Panel, featuremap_rows, selectivity_figure, tuning_grid
from cnnlab.runs import atomic_write, save_figure, start_run, write_json

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
    select: str = arg("score", "how channels are chosen: score (contrast × structure on the photo) or selective "
                               "(alive on the photo, most class-selective over the image set)",
                      choices=("score", "selective"))
    top_k: int = arg(8, "top images per channel over the image set (0: skip the image set)")
    dataset: Path | None = arg(None, "folder of images for the top images (class sub-folders give labels; default: "
                                     "Oxford-IIIT Pet under the data root plus the built-in photos)")
    data_root: Path | None = arg(None, "folder holding oxford-iiit-pet/ and peppers.png (default: $CNNLAB_DATA_ROOT, "
                                       "../shared/data, ~/.cache/cnnlab/data)")
    max_per_class: int = arg(20, "use at most N images per class of the set, drawn with --seed (0: all); 20 halves "
                                 "a cold pass over the Pets copy (535 of 1,083 images)")
    builtin_photos: bool = arg(True, "add the built-in photos (peppers, coffee, chelsea, astronaut, rocket) to the set")
    cache: bool = arg(True, "cache the image set's activations on disk and reuse them")
    cache_dir: Path | None = arg(None, "activation cache folder (default: $CNNLAB_CACHE_DIR or ~/.cache/cnnlab/features)")
    workers: int = arg(2, "image decoding threads (0: decode in the main thread)")

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
        if not 0 <= self.top_k <= 64:
            raise ValueError(f"--top-k must be between 0 and 64, got {self.top_k}")
        if self.select == "selective" and self.top_k == 0:
            raise ValueError("--select selective needs the image set: give --top-k 1 or more")
        if self.workers < 0:
            raise ValueError(f"--workers must be 0 or more, got {self.workers}")
        if self.max_per_class < 0:
            raise ValueError(f"--max-per-class must be 0 (all) or more, got {self.max_per_class}")
        for name in ("image", "dataset", "data_root", "cache_dir"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))


@dataclass
class StageChoice:
    stage: str
    layer: str
    depth: int
    depth_fraction: float
    shape: list[int]  # C, H, W
    dead_channels: int
    channels: list[dict]  # channel, score, contrast, structure, dead (+ selectivity and top images with a set)
    chosen_by: str  # "score", "selective" or "user"
    receptive_field: dict | None = None  # size, jump, start (input pixels, per axis H, W)
    set_summary: dict | None = None  # selectivity over all channels alive on the set
    all_channels: dict | None = None  # per-channel arrays over the set (C,)


@dataclass
class Result:
    image: str
    model: str
    n_blocks: int
    score_definition: str
    select: str = "score"
    selectivity_definition: str = SELECTIVITY_DEFINITION
    image_set: dict | None = None  # name, images, labelled, classes, cache, seconds
    chance: dict | None = None  # top share and entropy of random k-subsets
    stages: list[StageChoice] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)
    run_dir: Path | None = None


def _photo(config: Config):
    if config.image is not None:
        return load_image(config.image), str(config.image)
    path, img, name = default_photo(config.data_root)
    return img, str(path) if path else f"built-in:{name}"


def _stages(config: Config, blocks: list[Layer]) -> dict[str, Layer]:
    by_name = {b.name: b for b in blocks}
    if not config.layers:
        return pick_stages(blocks)
    unknown = [n for n in config.layers if n not in by_name]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown}; candidates: {', '.join(by_name)}")
    stages = dict(zip(STAGES, (by_name[n] for n in config.layers)))
    if not stages["early"].depth < stages["middle"].depth < stages["late"].depth:
        raise ValueError("--layers must be given in depth order: early, middle, late")
    return stages


def _choose(config: Config, i: int, layer: Layer, fmap: torch.Tensor, analysis: SetAnalysis | None
            ) -> tuple[list[ChannelScore], str]:
    C = fmap.shape[0]
    if config.channels:
        chans = _channel_list(config.channels[0 if len(config.channels) == 1 else i])
        bad = [c for c in chans if not 0 <= c < C]
        if bad:
            raise ValueError(f"channel(s) {bad} out of range for {layer.name} ({C} channels)")
        scores = score_channels(fmap)
        return [scores[c] for c in chans], "user"
    if config.select == "selective":
        assert analysis is not None and analysis.selectivity[layer.name] is not None
        sel = analysis.selectivity[layer.name]  # the most selective, for as many different classes as possible
        return choose_channels(fmap, config.per_stage, config.max_similarity, rank=sel.selectivity.tolist(),
                               groups=sel.top_class.tolist()), "selective"
    return choose_channels(fmap, config.per_stage, config.max_similarity), "score"


def run(config: Config) -> Result:
    run = start_run("featuremaps", config)
    run_dir, device = run.dir, run.device
    img, image_name = _photo(config)
    model = load_pretrained(config.model, device=device)
    blocks = candidate_layers(model.net)
    stages = _stages(config, blocks)
    analysis = analyse_set(config, model, [s.name for s in stages.values()]) if config.top_k else None

    x = model.preprocess(img).unsqueeze(0).to(device)  # 1, 3, 224, 224 in [0, 1]
    maps = extract(model.net, model.normalize(x), [s.name for s in stages.values()])
    shown = x[0].permute(1, 2, 0).cpu().numpy()  # H, W, 3: what the network sees
    result = Result(image_name, model.spec.label, len(blocks), SCORE_DEFINITION, select=config.select, run_dir=run_dir)
    if analysis is not None:
        result.image_set, result.chance = analysis.record(), analysis.chance_record()
    rows, arrays = [], {}
    for i, (stage, layer) in enumerate(stages.items()):
        fmap = maps[layer.name][0].float().cpu()  # C, H, W
        chosen, how = _choose(config, i, layer, fmap, analysis)
        norm = normalize01(fmap[[c.channel for c in chosen]])  # k, H, W in [0, 1]
        up = F.interpolate(norm[None], size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[0].clamp(0, 1)
        arrays.update({stage: norm.numpy(), f"{stage}_channels": np.array([c.channel for c in chosen]),
                       f"{stage}_on_photo": up.numpy()})
        panels = [Panel(norm[j].numpy(), f"{layer.name} ch {c.channel}\nscore {c.score:.2f}", up[j].numpy())
                  for j, c in enumerate(chosen)]
        label = f"{stage}: {layer.name}"
        rows.append((label, panels))
        choice = _stage_choice(stage, layer, fmap, chosen, how, analysis)
        result.stages.append(choice)
        fig = featuremap_rows(shown, [(label, panels)])
        C, H, W = fmap.shape
        fig.suptitle(f"{model.spec.name}: {stage} layer {layer.name} ({C}×{H}×{W})", fontsize=9)
        result.figures[stage] = save_figure(fig, run_dir / f"stage_{stage}.png").name
        if analysis is not None:
            result.figures[f"tuning_{stage}"] = _save_tuning(run_dir, stage, shown, panels, choice, analysis, config)
        log.info("%s layer %s: channels %s", stage, layer.name, [c.channel for c in chosen])
    fig = featuremap_rows(shown, rows)
    fig.suptitle(f"{model.spec.name} feature maps (each normalized to [0, 1]) and the maps on the photo", fontsize=10)
    result.figures["combined"] = save_figure(fig, run_dir / "featuremaps.png").name
    if analysis is not None and analysis.chance is not None:
        result.figures["selectivity"] = _save_selectivity(run_dir, result, analysis)
    _save_npz(run_dir / "maps.npz", arrays)
    write_json(run_dir / "featuremaps.json", result)
    return result


def _stage_choice(stage: str, layer: Layer, fmap: torch.Tensor, chosen: list[ChannelScore], how: str,
                  analysis: SetAnalysis | None) -> StageChoice:
    C, H, W = fmap.shape
    dead = sum(s.dead for s in score_channels(fmap))
    channels = [asdict(c) for c in chosen]
    choice = StageChoice(stage, layer.name, layer.depth, round(layer.fraction, 3), [C, H, W], dead, channels, how)
    if analysis is not None:
        choice.receptive_field = analysis.rf_record(layer.name)
        choice.set_summary = analysis.summary(layer.name)
        choice.all_channels = analysis.channel_arrays(layer.name)
        for rec in channels:
            rec.update(channel_record(analysis, layer.name, rec["channel"]))
    return choice


def _save_tuning(run_dir: Path, stage: str, shown: np.ndarray, panels: list[Panel], choice: StageChoice,
                 analysis: SetAnalysis, config: Config) -> str:
    rows = tuning_rows(analysis, choice.layer, choice.channels, panels)
    rf = choice.receptive_field or {}
    fig = tuning_grid(shown, rows, title=f"{stage} layer {choice.layer}: each channel's top {config.top_k} of "
                      f"{len(analysis.images)} images ({analysis.images.name}),\nthe patch under its strongest "
                      f"response (receptive field {rf.get('size', ['?'])[0]:g} px)")
    return save_figure(fig, run_dir / f"tuning_{stage}.png").name


def _save_selectivity(run_dir: Path, result: Result, analysis: SetAnalysis) -> str:
    shares = {f"{s.stage}\n{s.layer}": np.asarray(s.all_channels["top_share"], dtype=float) for s in result.stages}
    ch = analysis.chance
    fig = selectivity_figure(shares, ch.mean_top_share, ch.top_share_threshold, ch.k)
    fig.suptitle(f"class selectivity over {analysis.images.name} (labelled images)", fontsize=9)
    return save_figure(fig, run_dir / "selectivity.png").name


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(p: Path) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        p.write_bytes(buf.getvalue())

    atomic_write(path, write)


def present(result: Result) -> int:
    print(f"model: {result.model}   image: {result.image}   ({result.n_blocks} candidate blocks)")
    print(f"channels chosen by {result.select}; channel score: {result.score_definition}")
    if result.image_set:
        s, ch = result.image_set, result.chance
        print(f"image set: {s['name']}, {s['images']} images ({s['labelled']} labelled, {s['classes']} classes); "
              f"activations: {s['cache']}" + (f", {s['seconds']:.1f} s" if s["cache"] != "hit" else ""))
        if ch:
            thr = ch["top_share_threshold"]
            print(f"chance (random {ch['k']} images): top-class share {ch['mean_top_share']:.2f}; selective from "
                  + (f"{thr:.2f}" if thr is not None else f"no share (too few images per class for k={ch['k']})"))
    for s in result.stages:
        chans = ", ".join(f"{c['channel']} ({c['score']:.2f}" + (f", sel {c['selectivity']:.2f}"
                          if c.get("selectivity") is not None else "") + ")" for c in s.channels)
        print(f"  {s.stage:<6s} {s.layer:<14s} depth {s.depth} ({s.depth_fraction:.0%})  "
              f"{s.shape[0]}×{s.shape[1]}×{s.shape[2]}, {s.dead_channels} dead; channels: {chans}")
        if s.set_summary and s.set_summary.get("alive"):
            m = s.set_summary
            print(f"         over the set: mean selectivity {m['mean_selectivity']:.2f}, {m['selective']} of "
                  f"{m['alive']} live channels selective, {m['mixed']} mixed")
    print(f"figures and featuremaps.json: {result.run_dir}")
    return 0
