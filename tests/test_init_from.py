"""Pretrained starts (`init_from`): torchvision's format loads into our backbones exactly, a
missing hub file is a clear error naming where to put it (nothing is downloaded), and weights
for another architecture are refused."""

from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from ssl_assets.atomic import file_sha256
from ssl_assets.ml.backbones import build_backbone
from ssl_assets.ml.init_from import (
    MissingWeightsError,
    check_backbone,
    load_start,
    resolve_start,
    start_encoder,
)


@pytest.fixture
def hub_dir(tmp_path):
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(before)


def _torchvision_resnet18(seed: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so buffers must load too
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def test_a_torchvision_state_dict_gives_torchvisions_outputs_exactly(tmp_path):
    reference = _torchvision_resnet18()
    path = tmp_path / "resnet18-mine.pth"
    torch.save(reference.state_dict(), path)  # torchvision's format: conv1..., fc.*
    start = resolve_start(str(path))
    assert (start.kind, start.sha256) == ("file", file_sha256(path))

    ours = build_backbone("resnet18")
    load_start(ours, start.path)
    ours.eval()
    reference.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))


def test_a_fine_tuned_classifiers_weights_start_its_encoder(tmp_path):
    from ssl_assets.ml.evaluate.supervised import Classifier

    encoder = build_backbone("small_cnn", widths=[8, 16], strides=[2, 2])
    classifier = Classifier(encoder, 3)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(path))
    backbone, meta = start_encoder(
        resolve_start(str(path)), "small_cnn", {"widths": [8, 16], "strides": [2, 2]}
    )
    for name, value in encoder.state_dict().items():
        assert torch.equal(backbone.state_dict()[name], value)
    assert meta["backbone"] == "small_cnn"


def test_a_missing_hub_file_names_the_path_to_put_it_at(hub_dir):
    with pytest.raises(MissingWeightsError) as err:
        resolve_start("ResNet50_Weights.IMAGENET1K_V2")
    expected = hub_dir / "checkpoints" / "resnet50-11ad3fa6.pth"
    assert str(expected) in str(err.value)
    assert "nothing is downloaded" in str(err.value)
    assert isinstance(err.value, ValueError)  # assets refuse the run with this sentence
    assert not expected.exists()


def test_a_hub_file_whose_hash_does_not_match_its_name_is_refused(hub_dir):
    path = hub_dir / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(_torchvision_resnet18().state_dict(), path)
    with pytest.raises(ValueError, match="damaged"):
        resolve_start("ResNet18_Weights.IMAGENET1K_V1")


def test_weights_for_another_architecture_are_refused(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(_torchvision_resnet18().state_dict(), path)
    with pytest.raises(ValueError, match="do not fit"):
        load_start(build_backbone("small_cnn"), path)
    with pytest.raises(MissingWeightsError, match="no weights file"):
        resolve_start(str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match="neither"):
        resolve_start("enc-0000")  # a model id, but no registry to look it up in
    start = resolve_start(str(path))
    check_backbone(start, "resnet50")  # unknown architecture: the strict load decides
