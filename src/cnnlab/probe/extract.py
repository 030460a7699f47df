"""Penultimate features of a pretrained classifier for many image files, fast and faithfully.

Features are the input of the final linear layer (after global pooling:
``ImageNetClassifier.forward_features``), never the logits, and are L2-normalized. Images go
through the weights' own evaluation transform (resize, centre crop). Decoding and resizing
run in a thread pool (Pillow releases the GIL there) ahead of the network; batches are
small because depthwise convolutions on a CPU run fastest at batch 8-16 in channels_last.

The network can also run as several *streams* (``streams=N``): threads that each take whole
batches with ``threads / N`` intra-op threads, instead of one batch at a time split over all
cores. Streams win when the network alone is timed, but end to end (decoding included) one
stream is faster on a 2-core CPU, so one stream is the default; the timings are in
benchmarks/RESULTS.md.

bf16 autocast is used only when the CPU supports it *and* a calibration sample shows that
bf16 features agree with fp32 ones (cosine similarity of the normalized features at least
:data:`MIN_COSINE` for every sample image); the measured agreement is returned either way.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torchvision.transforms import functional as TF

from cnnlab.images import load_image
from cnnlab.precision import Precision
from cnnlab.precision import bf16_native as bf16_supported
from cnnlab.progress import make_progress

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
MIN_COSINE = 0.995  # per image, normalized bf16 vs fp32 features; measured ~0.9997 for MobileNetV2
CALIBRATION_IMAGES = 16  # images spread over the data set, run in both precisions
DEFAULT_BATCH = 16  # depthwise convs: batch 8-16 beats 64 several-fold on a 2-core CPU


def default_streams(device: str) -> int:
    """One inference stream using all torch threads (measured best end to end, see module doc)."""
    return 1


@dataclass(frozen=True)
class EvalTransform:
    """The weights' evaluation resize + centre crop, to a uint8 (3, crop, crop) tensor.

    Picklable and model-free so it can run in worker threads or processes; dividing the
    result by 255 gives exactly ``ImageNetClassifier.preprocess`` (which is float).
    """

    resize_size: tuple[int, ...]
    crop_size: tuple[int, ...]
    interpolation: str
    antialias: bool

    @classmethod
    def from_model(cls, model) -> EvalTransform:
        return cls(tuple(model.resize_size), tuple(model.crop_size), model.interpolation.value, bool(model.antialias))

    def describe(self) -> dict:
        return asdict(self)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        mode = TF.InterpolationMode(self.interpolation)
        img = TF.resize(img, list(self.resize_size), interpolation=mode, antialias=self.antialias)
        img = TF.center_crop(img, list(self.crop_size))
        return TF.pil_to_tensor(img)  # 3, H, W uint8

    def load(self, path: str | Path) -> torch.Tensor:
        return self(load_image(path))


@dataclass(frozen=True)
class Agreement:
    """bf16-vs-fp32 agreement of normalized features on a calibration sample."""

    images: int
    min_cosine: float
    mean_cosine: float
    max_abs_diff: float


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def channels_last(model, enabled: bool = True) -> Iterator[None]:
    """Put the model's weights in channels_last for the duration (restored afterwards)."""
    if not enabled:
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


@torch.inference_mode()
def features_of_batch(model, batch_u8: torch.Tensor, precision: str = "fp32", use_channels_last: bool = True) -> torch.Tensor:
    """L2-normalized float32 penultimate features (B, D) of a uint8 batch (B, 3, H, W)."""
    device = _device_of(model)
    run_in = Precision(bf16=precision == "bf16", channels_last=use_channels_last)
    x = run_in.images(batch_u8.to(device, non_blocking=True))  # B, 3, H, W in [0, 1]
    with run_in.autocast(str(device)):
        feats = model.forward_features(x)  # B, D
    if feats.ndim != 2 or feats.shape[1] != model.feature_dim:
        raise RuntimeError(f"expected penultimate features (B, {model.feature_dim}), got {tuple(feats.shape)}")
    return F.normalize(feats.float(), dim=1)


def measure_agreement(model, batch_u8: torch.Tensor, use_channels_last: bool = True) -> Agreement:
    """Compare bf16 with fp32 features on one batch (cosine per image, after normalization)."""
    ref = features_of_batch(model, batch_u8, "fp32", use_channels_last)
    low = features_of_batch(model, batch_u8, "bf16", use_channels_last)
    cos = (ref * low).sum(dim=1)  # B
    return Agreement(len(batch_u8), float(cos.min()), float(cos.mean()), float((ref - low).abs().max()))


def choose_precision(requested: str, model, sample_u8: torch.Tensor | None, use_channels_last: bool = True
                     ) -> tuple[str, Agreement | None]:
    """Resolve ``auto`` to ``bf16`` or ``fp32``; measure agreement whenever bf16 is possible."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; valid: {', '.join(PRECISIONS)}")
    device = str(_device_of(model))
    if requested == "fp32" or sample_u8 is None or len(sample_u8) == 0:
        return "fp32", None
    if not bf16_supported(device):
        if requested == "bf16":
            raise ValueError(f"bf16 was requested but {device} does not support it; use --precision fp32 or auto")
        log.info("bf16 not supported on %s: extracting in fp32", device)
        return "fp32", None
    agreement = measure_agreement(model, sample_u8, use_channels_last)
    if requested == "bf16" or agreement.min_cosine >= MIN_COSINE:
        log.info("precision bf16: cosine to fp32 features min %.5f, mean %.5f over %d images",
                 agreement.min_cosine, agreement.mean_cosine, agreement.images)
        return "bf16", agreement
    log.warning("bf16 features disagree with fp32 (min cosine %.4f < %.3f): extracting in fp32",
                agreement.min_cosine, MIN_COSINE)
    return "fp32", agreement


def _batches(paths: Sequence[Path], transform: EvalTransform, batch_size: int, workers: int) -> Iterator[torch.Tensor]:
    """Decoded uint8 batches, in order, with up to ``2 * workers`` batches decoded ahead."""
    if workers <= 0:
        for start in range(0, len(paths), batch_size):
            yield torch.stack([transform.load(p) for p in paths[start:start + batch_size]])
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cnnlab-decode") as pool:
        pending: list = []
        starts = iter(range(0, len(paths), batch_size))
        ahead = 2 * workers
        for start in starts:
            pending.append([pool.submit(transform.load, p) for p in paths[start:start + batch_size]])
            if len(pending) > ahead:
                yield torch.stack([f.result() for f in pending.pop(0)])
        while pending:
            yield torch.stack([f.result() for f in pending.pop(0)])


@contextlib.contextmanager
def _inference_pool(streams: int, intra_threads: int) -> Iterator[ThreadPoolExecutor]:
    """Threads that run the network, each with ``intra_threads`` OpenMP threads.

    OpenMP's thread count is per calling thread, so the caller's setting is kept; it is set
    again on exit anyway because torch also pushes it to MKL, which is process-wide.
    """
    before = torch.get_num_threads()
    pool = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="cnnlab-infer",
                              initializer=torch.set_num_threads, initargs=(intra_threads,))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True)
        torch.set_num_threads(before)


@dataclass
class Extraction:
    """Features (N, D) float32, L2-normalized, in the order of the input paths."""

    features: torch.Tensor
    precision: str
    agreement: Agreement | None
    seconds: float
    channels_last: bool
    streams: int = 1

    @property
    def images_per_second(self) -> float:
        return len(self.features) / self.seconds if self.seconds > 0 else float("nan")


def calibration_sample(paths: Sequence[Path], transform: EvalTransform, n: int = CALIBRATION_IMAGES) -> torch.Tensor:
    """``n`` images spread evenly over ``paths`` (deterministic), as a uint8 batch."""
    idx = np.unique(np.linspace(0, len(paths) - 1, num=min(n, len(paths))).round().astype(int))
    return torch.stack([transform.load(paths[i]) for i in idx])


def extract_features(
    model,
    paths: Sequence[str | Path],
    *,
    batch_size: int = DEFAULT_BATCH,
    workers: int = 2,
    precision: str = "auto",
    use_channels_last: bool | None = None,
    description: str = "extracting features",
    calibration_paths: Sequence[str | Path] | None = None,
    calibrate: bool = True,
    streams: int | None = None,
) -> Extraction:
    """Penultimate, L2-normalized features of ``model`` for every file in ``paths``.

    ``precision`` is ``auto`` (bf16 when supported and faithful, see module doc), ``fp32`` or
    ``bf16``. ``use_channels_last`` defaults to True on CPU. A progress bar shows images/s.
    ``calibration_paths`` (default: ``paths``) supply the bf16 calibration sample; shards of
    one data set pass the full list so that every process makes the same choice.
    ``calibrate=False`` skips the agreement check for an explicit ``bf16`` (benchmarks that
    measured it once already). ``streams`` batches run concurrently, each on
    ``torch.get_num_threads() // streams`` intra-op threads (default: see :func:`default_streams`).
    """
    def batch_fn(m, batch_u8, used, cl):
        return {"features": features_of_batch(m, batch_u8, used, cl)}

    out, ext = extract_batches(model, paths, batch_fn, batch_size=batch_size, workers=workers, precision=precision,
                               use_channels_last=use_channels_last, description=description,
                               calibration_paths=calibration_paths, calibrate=calibrate, streams=streams)
    features = out.get("features", torch.empty(0, model.feature_dim))
    return Extraction(features, ext.precision, ext.agreement, ext.seconds, ext.channels_last, ext.streams)


def extract_batches(
    model,
    paths: Sequence[str | Path],
    batch_fn,
    *,
    batch_size: int = DEFAULT_BATCH,
    workers: int = 2,
    precision: str = "auto",
    use_channels_last: bool | None = None,
    description: str = "extracting",
    calibration_paths: Sequence[str | Path] | None = None,
    calibrate: bool = True,
    streams: int | None = None,
) -> tuple[dict[str, torch.Tensor], Extraction]:
    """Run ``batch_fn(model, batch_u8, precision, channels_last) -> {name: (B, ...)}`` over every file.

    The machinery of :func:`extract_features` (threaded decoding, channels_last, streams, the
    precision choice) for any per-image outputs: returns ``{name: (N, ...)}`` in the order of
    ``paths`` and the extraction record (its ``features`` left empty).
    """
    if precision == "auto" and not calibrate:
        raise ValueError("precision 'auto' needs the calibration sample (calibrate=True)")
    paths = [Path(p) for p in paths]
    model.eval()
    device = _device_of(model)
    if use_channels_last is None:
        use_channels_last = device.type == "cpu"
    transform = EvalTransform.from_model(model)
    t0 = time.perf_counter()
    streams = streams or default_streams(str(device))
    intra = max(1, torch.get_num_threads() // streams)
    with channels_last(model, use_channels_last), _inference_pool(streams, intra) as pool:
        calib = [Path(p) for p in calibration_paths] if calibration_paths is not None else paths
        if calibrate or precision != "bf16":
            sample = calibration_sample(calib, transform) if calib and precision != "fp32" else None
            used, agreement = pool.submit(choose_precision, precision, model, sample, use_channels_last).result()
        else:
            used, agreement = precision, None
        out = _run_batches(pool, model, paths, transform, batch_fn, used, use_channels_last, description,
                           batch_size, workers, streams, t0)
    seconds = time.perf_counter() - t0
    log.info("%s: %d images in %.1f s (%.1f img/s, %s%s, %d streams)", description, len(paths), seconds,
             len(paths) / max(seconds, 1e-9), used, ", channels_last" if use_channels_last else "", streams)
    return out, Extraction(torch.empty(0), used, agreement, seconds, use_channels_last, streams)


def _run_batches(pool, model, paths, transform, batch_fn, used, use_channels_last, description, batch_size, workers,
                 streams, t0) -> dict[str, torch.Tensor]:
    """Submit decoded batches to the inference pool and gather the outputs in order, with a progress bar."""
    out: dict[str, torch.Tensor] = {}
    done = 0
    with make_progress() as progress:
        task = progress.add_task(description, total=len(paths), info="")
        in_flight: list = []

        def collect() -> None:
            nonlocal done
            result = in_flight.pop(0).result()
            B = 0
            for name, t in result.items():
                t = t.cpu()
                if name not in out:  # N, ... allocated from the first batch
                    out[name] = torch.empty((len(paths), *t.shape[1:]), dtype=t.dtype)
                out[name][done:done + len(t)] = t
                B = len(t)
            done += B
            rate = done / max(time.perf_counter() - t0, 1e-9)
            progress.update(task, advance=B, info=f"{rate:6.1f} img/s")

        for batch in _batches(paths, transform, batch_size, workers):
            in_flight.append(pool.submit(batch_fn, model, batch, used, use_channels_last))
            if len(in_flight) >= 2 * streams:
                collect()
        while in_flight:
            collect()
    return out
