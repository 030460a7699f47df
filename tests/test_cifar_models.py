"""CIFAR-10 architectures: exact layers, shapes, no NaN, BatchNorm without biases, whitening."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.models import cifar, cpu_ops


def test_hw_mish_has_exactly_the_specified_layers():
    net = cifar.build("hw-mish")
    layers = list(net.features)
    kinds = [type(m) for m in layers]  # cpu_ops' Mish and max-pool: torch's functions, faster for bf16 on the CPU
    assert kinds == [nn.Conv2d, cpu_ops.Mish, cpu_ops.MaxPool2x2, nn.Conv2d, cpu_ops.Mish, nn.Conv2d, cpu_ops.Mish,
                     nn.AdaptiveAvgPool2d, nn.Flatten]
    c1, pool, c2, c3 = layers[0], layers[2], layers[3], layers[5]
    assert (c1.in_channels, c1.out_channels, c1.kernel_size, c1.padding) == (3, 64, (11, 11), (5, 5))
    assert (pool.kernel_size, pool.stride) == (2, 2)
    assert (c2.in_channels, c2.out_channels, c2.kernel_size) == (64, 128, (3, 3))
    assert (c3.in_channels, c3.out_channels, c3.kernel_size) == (128, 128, (3, 3))
    assert layers[7].output_size == 1  # global average pooling over the whole map
    assert (net.head.in_features, net.head.out_features) == (128, 10)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert cifar.parameter_count(net) == (64 * 3 * 121 + 64) + (128 * 64 * 9 + 128) + (128 * 128 * 9 + 128) + 1290
    assert net.first_conv is c1


@pytest.mark.parametrize("name", ["hw-mish", "hw-mish-bn", "improved"])
def test_shapes_and_no_nan(name):
    torch.manual_seed(0)
    net = cifar.build(name)
    x = torch.rand(4, 3, 32, 32)
    if name == "improved":
        net.init_from_data(torch.rand(64, 3, 32, 32))
    out = net(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    assert net.forward_features(x).shape == (4, net.feature_dim)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    assert net.init_scheme


def test_hw_mish_bn_convs_feeding_batchnorm_have_no_bias():
    net = cifar.build("hw-mish-bn")
    layers = list(net.features)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    for i in convs:
        assert layers[i].bias is None
        assert isinstance(layers[i + 1], nn.BatchNorm2d) and isinstance(layers[i + 2], nn.Mish)
    assert [layers[i].kernel_size for i in convs] == [(11, 11), (3, 3), (3, 3)]


def test_improved_whitening_decorrelates_patches():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(200, 1, 32, 32, generator=g)
    images = (0.7 * base + 0.3 * torch.rand(200, 3, 32, 32, generator=g)).clamp(0, 1)  # correlated channels
    net = cifar.build("improved")
    net.init_from_data(images)
    with torch.no_grad():
        y = nn.functional.conv2d(net.normalize(images), net.first_conv.weight[:12])  # N, 12, 31, 31
    flat = y.permute(1, 0, 2, 3).reshape(12, -1)
    cov = flat @ flat.T / flat.shape[1]
    assert torch.allclose(cov, torch.eye(12), atol=0.05)
    assert not net.first_conv.weight.requires_grad


def test_registry_and_listing():
    from cnnlab.models.listing import cifar_entries

    assert cifar.MODELS.names() == ["hw-mish", "hw-mish-bn", "improved"]
    with pytest.raises(ValueError, match="hw-mish-bn"):
        cifar.build("resnet-cifar")
    entries = {e.name: e.detail for e in cifar_entries()}
    assert entries["hw-mish"] == "246,026 parameters"
    assert set(entries) == {"hw-mish", "hw-mish-bn", "improved"}


def test_cpu_mish_is_torchs_mish_with_its_gradient():
    mish = cpu_ops._Mish.apply  # the formula; Mish() takes it for bf16 CPU tensors only
    x = torch.cat([torch.linspace(-30, 30, 601), torch.tensor([-1e4, 1e4])]).double().requires_grad_()
    y = mish(x)
    assert torch.allclose(y, nn.functional.mish(x.detach()), rtol=1e-12, atol=1e-12)
    assert torch.isfinite(y).all() and y[-1] == 1e4
    torch.autograd.gradcheck(mish, (torch.randn(40, dtype=torch.float64, requires_grad=True) * 4,))
    with torch.no_grad():  # bf16: a few roundings more than torch's kernel, still well inside 2 %
        xb = (torch.randn(10_000, generator=torch.Generator().manual_seed(0)) * 3).bfloat16()
        exact = nn.functional.mish(xb.double())
        assert ((cpu_ops.Mish()(xb).double() - exact).abs() / (exact.abs() + 1e-3)).max() < 0.02
        assert not torch.equal(cpu_ops.Mish()(xb), nn.functional.mish(xb))  # bf16 takes the formula
        xf = xb.float()  # fp32, where the formula is slower: torch's kernel, bit for bit
        assert torch.equal(cpu_ops.Mish()(xf), nn.functional.mish(xf))


def test_cpu_max_pool_matches_torch_in_values_and_gradients_and_stays_nchw():
    x = torch.randn(3, 4, 8, 6).bfloat16().requires_grad_()  # bf16 on the CPU: the channels_last path
    y = cpu_ops.MaxPool2x2()(x)
    ref = nn.functional.max_pool2d(x, 2, 2)
    assert torch.equal(y, ref) and y.is_contiguous()
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, g)
    (grad_ref,) = torch.autograd.grad(ref, x, g)
    assert torch.equal(grad, grad_ref) and grad.is_contiguous()  # an NCHW gradient for the conv below
    torch.autograd.gradcheck(cpu_ops._ChannelsLastMaxPool.apply, (x.detach().double().requires_grad_(),))
    cl = x.detach().contiguous(memory_format=torch.channels_last)  # already channels_last: torch's pool
    assert torch.equal(cpu_ops.MaxPool2x2()(cl), ref.detach())
