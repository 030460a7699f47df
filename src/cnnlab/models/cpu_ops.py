"""Mish and 2x2 max-pooling as the ``hw-mish`` nets use them, computed faster in bf16 on the CPU.

Same functions as ``nn.Mish`` and ``nn.MaxPool2d(2, 2)`` (and subclasses of them, so code that
inspects layers sees those), with a cheaper path for bf16 tensors on the CPU; elsewhere torch's own
kernels run (in fp32 the rewrite was 0.91-0.92x, slower: twice the bytes through its five kernels).
A bf16 training step runs 1.12x (``hw-mish-bn``) to 1.17x (``hw-mish``) faster on the AVX512-BF16
CPU (benchmarks/bench_cpu_ops.py, benchmarks/RESULTS.md):

* torch's CPU Mish kernel evaluates exp, log1p and tanh per element: 35 ms per 16.8 M bf16
  elements, about 30 % of the step with its backward. With ``e = exp(x)``,
  ``tanh(softplus(x)) = n / (n + 2)`` where ``n = e (e + 2)``: one transcendental instead of three,
  18 ms, at a few bf16 roundings more (largest relative error 1.3 % against 0.4 %).
* torch's 2x2 max-pool is 13x slower on NCHW than on channels_last tensors (48 against 4 ms on
  the 64 x 32 x 32 maps of a batch of 256). The pool runs on a channels_last copy and hands back
  NCHW, its gradient too (a channels_last gradient would send the 11x11 convolution's backward
  down its slow channels_last path): 24 against 52 ms forward, copies included, 44 against 59 ms
  with the backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CL = torch.channels_last


class _Mish(torch.autograd.Function):
    """mish(x) = x tanh(softplus(x)) = x n / (n + 2), n = e (e + 2), e = exp(x); the gradient is
    tanh(sp) + x sech²(sp) sigmoid(x), recomputed from x in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        e = torch.exp(x.clamp(max=20.0))  # above 20, n / (n + 2) is 1 in any precision
        n = e * (e + 2)
        return x * n / (n + 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        e = torch.exp(x.clamp(max=20.0))
        n = e * (e + 2)
        t = n / (n + 2)  # tanh(softplus(x))
        return grad * (t + x * (1 - t * t) * (e / (1 + e)))


def _cpu_bf16(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.bfloat16


class Mish(nn.Mish):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Mish.apply(x) if _cpu_bf16(x) else F.mish(x)


class _ChannelsLastMaxPool(torch.autograd.Function):
    """2x2/2 max-pool computed in channels_last; input, output and gradients stay NCHW."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x_cl = x.contiguous(memory_format=CL)
        y, indices = torch.ops.aten.max_pool2d_with_indices(x_cl, [2, 2], [2, 2])
        ctx.save_for_backward(x_cl, indices)
        return y.contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x_cl, indices = ctx.saved_tensors
        g = torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(memory_format=CL), x_cl, [2, 2], [2, 2],
                                                            [0, 0], [1, 1], False, indices)
        return g.contiguous()


class MaxPool2x2(nn.MaxPool2d):
    def __init__(self) -> None:
        super().__init__(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _cpu_bf16(x) and x.dim() == 4 and x.is_contiguous():
            return _ChannelsLastMaxPool.apply(x)
        return super().forward(x)
