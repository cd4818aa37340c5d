"""Backbones (output dims, preprocessing metadata, GroupNorm option) and projection heads."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from ssl_assets.ml.backbones import BACKBONES, build_backbone
from ssl_assets.ml.heads import (
    BYOLPredictionHead,
    BYOLProjectionHead,
    DINOProjectionHead,
    MoCoProjectionHead,
    SimCLRProjectionHead,
    VICRegProjectionHead,
)


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _check_preprocessing(backbone: nn.Module, size: int, channels: int = 3) -> None:
    meta = backbone.preprocessing
    assert meta["input_size"] == size
    assert meta["channels"] == channels
    assert len(meta["mean"]) == len(meta["std"]) == channels
    assert meta["value_range"] == [0.0, 1.0]
    assert json.loads(json.dumps(meta)) == meta  # serialisable next to the weights


def test_small_cnn_dims_params_and_metadata() -> None:
    torch.manual_seed(0)
    net = build_backbone("small_cnn")
    assert net.out_dim == 256
    n_params = sum(p.numel() for p in net.parameters())
    assert 0.3e6 <= n_params <= 1.0e6
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 256)
    _check_preprocessing(net, 32)
    gray = build_backbone("small_cnn", in_channels=1, mean=[0.5], std=[0.2], input_size=28)
    assert gray(torch.randn(2, 1, 28, 28)).shape == (2, 256)
    _check_preprocessing(gray, 28, channels=1)
    assert gray.preprocessing["mean"] == [0.5]


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_groupnorm_option_removes_every_batchnorm(name: str) -> None:
    assert _has_batchnorm(build_backbone(name))
    net = build_backbone(name, norm="group")
    assert not _has_batchnorm(net)
    assert any(isinstance(m, nn.GroupNorm) for m in net.modules())
    with pytest.raises(ValueError):
        build_backbone(name, norm="layer")


def test_resnet18_small_image_stem() -> None:
    torch.manual_seed(0)
    net = build_backbone("resnet18", small_image_stem=True)
    assert net.out_dim == 512
    assert net.net.conv1.kernel_size == (3, 3) and net.net.conv1.stride == (1, 1)
    assert isinstance(net.net.maxpool, nn.Identity)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    _check_preprocessing(net, 32)
    _check_preprocessing(build_backbone("resnet18"), 224)


def test_resnet50_out_dim() -> None:
    net = build_backbone("resnet50")
    assert net.out_dim == 2048
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 2048)


def test_vit_patch4_global_and_local_crops_and_masked_encoding() -> None:
    torch.manual_seed(0)
    vit = build_backbone("vit", embed_dim=32, depth=2, num_heads=4)
    assert vit.out_dim == 32 and vit.patch_size == 4 and vit.num_patches == 64
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 32)
    assert vit(torch.randn(2, 3, 16, 16)).shape == (2, 32)  # DINO local crop
    idx_keep = torch.tensor([[0, 5, 63], [1, 2, 3]])
    tokens = vit.forward_encoder(torch.randn(2, 3, 32, 32), idx_keep)
    assert tokens.shape == (2, 4, 32)  # class token + 3 kept patches
    _check_preprocessing(vit, 32)
    assert build_backbone("vit").out_dim == 192


def test_registry_rejects_unknown_names() -> None:
    assert {"resnet18", "resnet50", "small_cnn", "vit"} <= set(BACKBONES)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("alexnet")


def test_heads_shapes_and_batchnorm_switch() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 32)
    heads = [
        SimCLRProjectionHead(32, 64, 16),
        SimCLRProjectionHead(32, 64, 16, num_layers=3),
        MoCoProjectionHead(32, 64, 16),
        BYOLProjectionHead(32, 64, 16),
        BYOLPredictionHead(32, 64, 16),
        VICRegProjectionHead(32, 64, 16),
        DINOProjectionHead(32, 64, 8, 16),
    ]
    for head in heads:
        assert head(x).shape == (4, 16)
    assert not _has_batchnorm(MoCoProjectionHead(32, 64, 16))
    assert not _has_batchnorm(SimCLRProjectionHead(32, 64, 16, batch_norm=False))
    assert _has_batchnorm(SimCLRProjectionHead(32, 64, 16))


def test_dino_head_normalised_last_layer_and_deepcopy() -> None:
    torch.manual_seed(0)
    head = DINOProjectionHead(32, 64, 8, 16, norm_last_layer=True)
    assert not head.last_layer.weight_g.requires_grad
    norms = head.last_layer.weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(16))
    clone = copy.deepcopy(head)
    x = torch.randn(3, 32)
    torch.testing.assert_close(clone(x), head(x))
    head(x).sum().backward()
    head.cancel_last_layer_gradients(epoch=0)  # freeze_last_layer=-1: keeps gradients
    assert head.last_layer.weight_v.grad is not None
    frozen = DINOProjectionHead(32, 64, 8, 16, freeze_last_layer=1)
    frozen(x).sum().backward()
    frozen.cancel_last_layer_gradients(epoch=0)
    assert frozen.last_layer.weight_v.grad is None
