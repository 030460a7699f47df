"""Where bf16 autocast and channels_last run: one check of the hardware, one representation.

:class:`Precision` is what a forward pass runs in (bf16 autocast or not, channels_last or not);
:func:`bf16_native` says whether a device computes bf16 in hardware. Training picks a
:class:`Precision` per model (:func:`for_training`); feature extraction
(:mod:`cnnlab.probe.extract`) additionally checks that bf16 features agree with fp32 ones.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

CHOICES = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class Precision:
    bf16: bool
    channels_last: bool

    def autocast(self, device: str):
        """bf16 autocast on ``device``'s type, or a no-op context in fp32."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)

    def images(self, uint8: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> float in [0, 1] in the layout the model runs in."""
        x = uint8.float().div_(255)  # B, 3, H, W
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def for_inference(self) -> Precision:
        """The precision of forward-only passes (evaluation, precise BN): the same bf16 choice, always
        channels_last. Training keeps NCHW for the hw-mish nets because the backward pass of their
        3-channel 11x11 conv is slow in channels_last; without a backward pass the layout pays off:
        their evaluation runs 1.29x faster in bf16 and 1.16-1.19x in fp32 on the AVX512-BF16 CPU
        (``improved`` trains in channels_last already; benchmarks/bench_eval.py)."""
        return Precision(self.bf16, channels_last=True)


FP32 = Precision(bf16=False, channels_last=False)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16); elsewhere torch emulates it slowly."""
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(check()) if check is not None else False


def bf16_native(device: str) -> bool:
    """Whether ``device`` computes bf16 in hardware (CUDA: compute capability; CPU: AVX512-BF16)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


# Where bf16 autocast / channels_last pay off for training on a CPU with AVX512-BF16 (the 2-core
# development CPU; training step, batch 256, best of alternating rounds; see
# benchmarks/RESULTS.md). hw-mish: bf16 1.2-1.9x faster than fp32, channels_last 0.5x (the
# 3-channel 11x11 conv is slow in that layout). improved: bf16 + channels_last 1.3x faster than
# fp32, bf16 alone 1.08x. Without AVX512-BF16 (AVX2 only) bf16 is emulated, about 10x slower than
# fp32, so ``auto`` runs fp32 there; channels_last still pays off for improved alone (fp32: 1.10x;
# hw-mish 0.93x, hw-mish-bn 0.79x; benchmarks/bench_precision.py). On CUDA both are used.
CPU_AUTO: dict[str, Precision] = {
    "hw-mish": Precision(bf16=True, channels_last=False),
    "hw-mish-bn": Precision(bf16=True, channels_last=False),
    "improved": Precision(bf16=True, channels_last=True),
}


def for_training(choice: str, model: str, device: str) -> Precision:
    """``--precision`` (auto, bf16, fp32) of ``cnnlab train`` resolved for ``model`` on ``device``.

    An explicit ``bf16`` is honoured on a CPU without native bf16, with a warning (it is slow).
    """
    if choice not in CHOICES:
        raise ValueError(f"--precision must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "fp32":
        return FP32
    if device.startswith("cuda"):
        return Precision(True, True)
    if choice == "bf16":
        if not cpu_has_bf16():
            log.warning("--precision bf16 on a CPU without AVX512-BF16 (%s): torch emulates bf16 here, "
                        "about 10x slower than fp32; --precision auto or fp32 is faster",
                        torch.backends.cpu.get_cpu_capability())
        return Precision(True, False)
    auto = CPU_AUTO.get(model, FP32)
    return Precision(auto.bf16 and cpu_has_bf16(), auto.channels_last)
