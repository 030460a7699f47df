"""CIFAR-10 architectures: exact layers, shapes, no NaN, BatchNorm without biases, whitening."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.models import cifar


def test_hw_mish_has_exactly_the_specified_layers():
    net = cifar.build("hw-mish")
    layers = list(net.features)
    kinds = [type(m) for m in layers]
    assert kinds == [nn.Conv2d, nn.Mish, nn.MaxPool2d, nn.Conv2d, nn.Mish, nn.Conv2d, nn.Mish,
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
