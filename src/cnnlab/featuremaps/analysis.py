"""The image-set side of ``cnnlab featuremaps``: each layer's activations over the set, every
channel's top images and selectivity, and the records and figure rows made from them."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnlab.errors import CnnlabError
from cnnlab.featuremaps.imageset import (ImageSet, balanced_subset, builtin_photos, folder_set, pets_set,
                                         with_photos)
from cnnlab.featuremaps.receptive import ReceptiveField, receptive_field
from cnnlab.featuremaps.selectivity import Chance, ChannelSelectivity, chance_level, channel_selectivity, summarize
from cnnlab.featuremaps.tuning import Activations, activations, crop_size, patch, response_box, top_images_all
from cnnlab.plots.featuremaps import Panel, TuningRow
from cnnlab.probe import cache as tensor_cache
from cnnlab.probe.extract import EvalTransform

log = logging.getLogger(__name__)


class ImageSetError(CnnlabError):
    """The image set cannot give what was asked of it."""


@dataclass
class SetAnalysis:
    images: ImageSet
    acts: Activations
    k: int
    rf: dict[str, ReceptiveField]
    crop: tuple[int, int]
    transform: EvalTransform
    top: dict[str, np.ndarray]  # layer -> (C, k) indices of each channel's top images over the whole set
    chance: Chance | None = None  # None without at least two classes among the labelled images
    selectivity: dict[str, ChannelSelectivity | None] = field(default_factory=dict)
    alive: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> (C,) not constant over the set
    max_per_class: int = 0  # the set's images per class were capped at this (0: no cap)

    def record(self) -> dict:
        a = self.acts
        return {"name": self.images.name, "images": len(self.images), "labelled": int(self.images.labelled.sum()),
                "classes": len({y for y in self.images.labels if y >= 0}), "k": self.k,
                "max_per_class": self.max_per_class, "cache": a.cache,
                "cache_file": a.cache_file, "seconds": a.seconds, "images_per_second": a.images_per_second}

    def chance_record(self) -> dict | None:
        if not self.chance:
            return None
        return {k: v for k, v in asdict(self.chance).items() if k != "random_top_shares"}

    def rf_record(self, layer: str) -> dict:
        rf = self.rf[layer]
        return {"size": list(rf.size), "jump": list(rf.jump), "start": list(rf.start), "crop": list(self.crop)}

    def summary(self, layer: str) -> dict | None:
        sel = self.selectivity.get(layer)
        return {**asdict(summarize(sel)), "dead_on_set": int((~self.alive[layer]).sum())} if sel else None

    def channel_arrays(self, layer: str) -> dict:
        out = {"max_over_set": self.acts.layers[layer]["max"].amax(0).numpy(), "alive": self.alive[layer]}
        sel = self.selectivity.get(layer)
        if sel:
            out.update(top_share=sel.top_share, entropy_bits=sel.entropy_bits, selectivity=sel.selectivity,
                       top_class=sel.top_class, p_value=sel.p_value, selective=sel.selective)
        return out


def image_set(config) -> ImageSet:
    """The set named by ``config.dataset`` (or Pets under the data root), plus the built-in photos."""
    images = folder_set(config.dataset) if config.dataset is not None else pets_set(config.data_root)
    if images is not None and config.max_per_class:
        images = balanced_subset(images, config.max_per_class, config.seed)
    if config.builtin_photos:
        images = with_photos(images, builtin_photos(config.data_root))
    if images is None or len(images) == 0:
        raise ImageSetError("no images for the channels' top images: pass --dataset DIR, put Oxford-IIIT Pet "
                            "under --data-root, or allow --builtin-photos (or give --top-k 0)")
    if config.select == "selective" and not images.has_classes:
        raise ImageSetError(f"--select selective needs labelled images (at least two classes), but {images.name} "
                            "has none: use a folder with class sub-folders, Oxford-IIIT Pet, or --select score")
    return images


def analyse_set(config, model, layers: list[str]) -> SetAnalysis:
    """Activations of the image set at ``layers`` (cached), top images, selectivity against chance."""
    images = image_set(config)
    cache_dir = (config.cache_dir or tensor_cache.default_cache_dir()) if config.cache else None
    acts = activations(model, images, layers, cache_dir=cache_dir, workers=config.workers)
    crop = crop_size(model)
    rf = {n: receptive_field(model.net, n) for n in layers}
    out = SetAnalysis(images, acts, config.top_k, rf, crop, EvalTransform.from_model(model),
                      {n: top_images_all(acts.layers[n], config.top_k) for n in layers},
                      max_per_class=config.max_per_class)
    mask = images.labelled
    labels = np.asarray(images.labels, dtype=np.int64)
    k = min(config.top_k, int(mask.sum()))
    if images.has_classes and k > 0:
        out.chance = chance_level(labels[mask], k, seed=config.seed)
    for n in layers:
        mx = acts.layers[n]["max"]
        out.alive[n] = ((mx.amax(0) - mx.amin(0)) > 1e-6 * (1 + mx.abs().amax(0))).numpy()
        if out.chance is not None:
            top_lab = top_images_all(acts.layers[n], k, mask)
            out.selectivity[n] = channel_selectivity(top_lab, labels, out.alive[n], out.chance)
    log.info("image set %s: %d images, activations %s", images.name, len(images), acts.cache)
    return out


def channel_record(a: SetAnalysis, layer: str, channel: int) -> dict:
    """One chosen channel over the set: its selectivity and its top images with the box of their strongest response."""
    stats = a.acts.layers[layer]
    width = a.acts.shapes[layer][2]
    tops = []
    for i in a.top[layer][channel].tolist():
        tops.append({"image": str(a.images.paths[i]), "class": a.images.class_of(i),
                     "max": float(stats["max"][i, channel]), "mean": float(stats["mean"][i, channel]),
                     **response_box(stats, i, channel, width, a.rf[layer], a.crop)})
    rec: dict = {"alive_on_set": bool(a.alive[layer][channel]), "top_images": tops}
    sel = a.selectivity.get(layer)
    if sel is not None:
        y = int(sel.top_class[channel])
        rec.update(selectivity=float(sel.selectivity[channel]), top_share=float(sel.top_share[channel]),
                   entropy_bits=float(sel.entropy_bits[channel]), p_value=float(sel.p_value[channel]),
                   selective=bool(sel.selective[channel]),
                   top_class=a.images.classes[y] if y >= 0 else None)
    return rec


def tuning_rows(a: SetAnalysis, layer: str, channels: list[dict], panels: list[Panel]) -> list[TuningRow]:
    """Figure rows: per chosen channel its map, the map on the photo and the patches of its top images."""
    crops: dict[str, torch.Tensor] = {}
    rows = []
    for rec, panel in zip(channels, panels):
        patches = []
        for t in rec.get("top_images", []):
            if t["image"] not in crops:
                crops[t["image"]] = a.transform.load(t["image"])  # 3, H, W uint8: what the network saw
            name = t["class"] if t["class"] != "-" else Path(t["image"]).stem
            patches.append(Panel(patch(crops[t["image"]], a.rf[layer], t["y"], t["x"]), f"{name[:18]}\nmax {t['max']:.2f}"))
        sel = f", sel. {rec['selectivity']:.2f}" if rec.get("selectivity") is not None else ""
        rows.append(TuningRow(f"ch {rec['channel']}{sel}", panel.image, panel.overlay, patches))
    return rows
