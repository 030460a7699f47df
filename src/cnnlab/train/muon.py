"""Muon for convolution filters, SGD for everything else, behind one optimizer interface.

``torch.optim.Muon`` orthogonalizes each update (Newton-Schulz iterations on the momentum) and
accepts 2-D parameters only. A conv filter bank (out, in, kh, kw) is the matrix (out, in*kh*kw)
it multiplies patches with, so :class:`FilterMuon` keeps one 2-D copy per filter bank: before
every step it takes the current weights and gradients from the model (the lookahead average may
have replaced the weights since), Muon updates the copy, and the result goes back into the model,
whatever its memory format. The other trainable parameters (biases, BatchNorm shifts, the linear
head) take Nesterov SGD with the recipe's groups.

``normalize``: a filter bank followed by BatchNorm is scale-free (BatchNorm removes its scale), so
its norm only sets the effective step size; it is reset to sqrt(out) before each step instead of
being decayed, which keeps Muon's fixed-size steps a fixed fraction of the weights.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class FilterMuon:
    """Muon on the 4-D trainable parameters, SGD on the rest; ``param_groups`` lists both (SGD's first)."""

    def __init__(self, filters: Iterable[nn.Parameter], sgd: torch.optim.SGD, *, lr: float, momentum: float,
                 lr_scale: float, normalize: bool) -> None:
        self.filters = [p for p in filters]
        self.matrices = [torch.zeros(p.shape[0], p[0].numel(), device=p.device, requires_grad=True)
                         for p in self.filters]
        self.sgd, self.normalize = sgd, normalize
        # no decoupled decay (torch.optim.Muon defaults to 0.1): the weights are renormalized or left alone
        self.muon = torch.optim.Muon(self.matrices, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=0.0)
        for group in self.muon.param_groups:
            group["lr_scale"] = lr_scale  # the schedule sets lr = peak SGD lr x factor x lr_scale

    @property
    def param_groups(self) -> list[dict]:
        return self.sgd.param_groups + self.muon.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.sgd.zero_grad(set_to_none=set_to_none)
        for p in self.filters:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.sgd.step()
        for p, m in zip(self.filters, self.matrices):
            m.copy_(p.reshape(m.shape))
            if self.normalize:
                m.mul_(m.shape[0] ** 0.5 / m.norm().clamp_min(1e-12))
            m.grad = None if p.grad is None else p.grad.reshape(m.shape).float()
        self.muon.step()
        for p, m in zip(self.filters, self.matrices):
            p.copy_(m.view(p.shape))

    def state_dict(self) -> dict:
        return {"sgd": self.sgd.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.sgd.load_state_dict(state["sgd"])
        self.muon.load_state_dict(state["muon"])


def filter_banks(model: nn.Module) -> list[nn.Parameter]:
    """The trainable conv filter banks (4-D parameters) of ``model``, in module order."""
    return [p for p in model.parameters() if p.requires_grad and p.ndim == 4]
