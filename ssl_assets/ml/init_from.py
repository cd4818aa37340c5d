"""Pretrained starts: where an encoder's first weights come from (`init_from`).

Why: users start from public pretrained weights, not from random ones, and continual
(domain-adaptive) pretraining from such a start is what self-supervised learning on a few
thousand of one's own photos is good for (Gururangan et al., 2020, "Don't Stop Pretraining",
arXiv:2004.10964; Reed et al., 2022, "Self-Supervised Pretraining Improves Self-Supervised
Pretraining", arXiv:2103.12718). A start is named by one string, one of:

- a torchvision weights name, e.g. `ResNet50_Weights.IMAGENET1K_V2`: loaded through
  torchvision from the local torch hub cache (`torch.hub.get_dir()/checkpoints/`). No network
  is ever assumed: a file that is not there is a `MissingWeightsError` naming the path to put
  it at (and where torchvision publishes it); a file whose SHA-256 does not start with the hash
  torchvision put in its name is refused as damaged;
- a local `.pth` / `.pt` (read with `torch.load(weights_only=True)`: tensors only, no code) or
  `.safetensors` file holding a state_dict, in our format or torchvision's (for the ResNets,
  whose `fc` layer is dropped);
- a registered model id (an encoder, or the encoder of a fine-tuned model), resolved by the
  caller to its weights file after the registry's content hash is checked.

The start's source, kind and SHA-256 go into the registry's lineage and the model card
(`Start.lineage`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from ssl_assets.atomic import file_sha256

#: torchvision weights enums whose architecture we build, and the backbone that takes them
TORCHVISION_BACKBONES = {"ResNet18_Weights": "resnet18", "ResNet50_Weights": "resnet50"}
_WEIGHTS_NAME = re.compile(r"^[A-Za-z0-9]+_Weights\.[A-Za-z0-9_]+$")
_FILE_SUFFIXES = (".pth", ".pt", ".safetensors")
#: prefixes a saved state_dict may put before the backbone's own names (DDP, a classifier)
_PREFIXES = ("", "module.", "backbone.", "encoder.", "model.")


class MissingWeightsError(FileNotFoundError, ValueError):
    """A start's weights file is not where it must be (a ValueError too, so assets refuse
    the run with this message rather than fail with a traceback)."""


@dataclass(frozen=True)
class Start:
    """A resolved start: what was asked (`source`), what it is (`kind`: torchvision | file |
    model), the weights `path`, their `sha256`, and the backbone they are for when the
    source says (`backbone`; torchvision names and registered encoders do)."""

    source: str
    kind: str
    path: Path
    sha256: str
    backbone: str | None = None

    def lineage(self) -> dict[str, Any]:
        """What the registry and the model card record about the start."""
        return {
            "source": self.source,
            "kind": self.kind,
            "file": self.path.name,
            "sha256": self.sha256,
            "backbone": self.backbone,
        }


def hub_checkpoint(weights_name: str) -> tuple[Path, str]:
    """(where torchvision's hub cache keeps the weights `weights_name`, the URL it publishes
    them at). Raises ValueError for a name torchvision does not know."""
    import torchvision

    weights = torchvision.models.get_weight(weights_name)
    filename = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename, weights.url


def resolve_start(source: str, resolve_model: Callable[[str], Path] | None = None) -> Start:
    """The `Start` a source string names (see the module docstring); `resolve_model` turns a
    registered model id into its (verified) weights file."""
    source = source.strip()
    if _WEIGHTS_NAME.match(source):
        return _torchvision_start(source)
    if source.lower().endswith(_FILE_SUFFIXES) or os.sep in source:
        path = Path(source).expanduser()
        if path.is_dir():  # an encoder or model directory: its weights file
            path = next(
                (
                    path / n
                    for n in ("encoder.safetensors", "model.safetensors")
                    if (path / n).is_file()
                ),
                path / "encoder.safetensors",
            )
        if not path.is_file():
            raise MissingWeightsError(f"init_from {source!r}: no weights file at {path}")
        if not path.name.lower().endswith(_FILE_SUFFIXES):
            raise ValueError(
                f"init_from {source!r}: weights must be a .pth, .pt or .safetensors file"
            )
        return Start(source, "file", path, file_sha256(path), _recorded_backbone(path))
    if resolve_model is None:
        raise ValueError(
            f"init_from {source!r} is neither a torchvision weights name (e.g. "
            "ResNet50_Weights.IMAGENET1K_V2) nor a .pth/.safetensors file"
        )
    path = resolve_model(source)
    return Start(source, "model", path, file_sha256(path), _recorded_backbone(path))


def _torchvision_start(name: str) -> Start:
    enum_name = name.split(".")[0]
    if enum_name not in TORCHVISION_BACKBONES:
        raise ValueError(
            f"init_from {name!r}: no backbone here takes {enum_name}; use one of "
            f"{sorted(TORCHVISION_BACKBONES)}"
        )
    path, url = hub_checkpoint(name)
    if not path.is_file():
        raise MissingWeightsError(
            f"init_from {name!r}: torchvision's weights file is not in the local torch hub "
            f"cache and nothing is downloaded; put {path.name} (published at {url}) at {path} "
            "(the cache is torch.hub.get_dir(); $TORCH_HOME moves it)"
        )
    digest = file_sha256(path)
    prefix = re.search(r"-([a-f0-9]+)\.", path.name)
    if prefix and not digest.startswith(prefix.group(1)):
        raise ValueError(
            f"init_from {name!r}: {path} has SHA-256 {digest}, which does not start with the "
            f"{prefix.group(1)} in its name: the file is damaged or another one; replace it"
        )
    return Start(name, "torchvision", path, digest, TORCHVISION_BACKBONES[name.split(".")[0]])


def _recorded_backbone(path: Path) -> str | None:
    """The backbone an `encoder.json` / `model.json` beside the weights names, if any."""
    for meta_name in ("encoder.json", "model.json"):
        meta = path.with_name(meta_name)
        if meta.is_file():
            try:
                found = json.loads(meta.read_text()).get("backbone")
            except (ValueError, OSError):
                return None
            return str(found) if found else None
    return None


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file: safetensors, or `torch.load(weights_only=True)` (a
    checkpoint dict holding the state_dict under `state_dict` or `model` is unwrapped)."""
    path = Path(path)
    if path.name.lower().endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state_dict of tensors")
    return dict(state)


def adapt_state_dict(state: Mapping[str, Tensor], backbone: nn.Module) -> dict[str, Tensor]:
    """`state` renamed to `backbone`'s parameter and buffer names: as is, without a prefix
    (`module.`, `backbone.`, ...), or, for our ResNets, torchvision's names (under `net.`,
    its `fc` classifier dropped). Raises ValueError when no renaming matches exactly."""
    from ssl_assets.ml.backbones import ResNetBackbone

    wanted = set(backbone.state_dict())
    for prefix in _PREFIXES:
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        candidates = [sub]
        if isinstance(backbone, ResNetBackbone):
            candidates.append({f"net.{k}": v for k, v in sub.items() if not k.startswith("fc.")})
        for candidate in candidates:
            if set(candidate) == wanted:
                return candidate
    ours = sorted(wanted - set(state))[:3]
    theirs = sorted(set(state) - wanted)[:3]
    raise ValueError(
        f"the weights do not fit a {type(backbone).__name__} ({len(wanted)} tensors; "
        f"e.g. missing {ours}, unexpected {theirs}): another architecture?"
    )


def load_start(backbone: nn.Module, path: str | Path, backbone_name: str | None = None) -> None:
    """Load the weights file `path` into `backbone` strictly (any format `read_state_dict`
    reads, names adapted by `adapt_state_dict`). With `backbone_name`, a file whose
    `encoder.json` / `model.json` names another backbone is refused first."""
    found = _recorded_backbone(Path(path))
    if backbone_name is not None and found not in (None, backbone_name):
        raise ValueError(f"weights {path} are a {found!r}, not a {backbone_name!r}")
    state = adapt_state_dict(read_state_dict(path), backbone)
    backbone.load_state_dict(state, strict=True)


def check_backbone(start: Start, backbone_name: str) -> None:
    """Refuse a start whose weights are known to be for another backbone."""
    if start.backbone is not None and start.backbone != backbone_name:
        raise ValueError(
            f"init_from {start.source!r} holds {start.backbone} weights, but the backbone is "
            f"{backbone_name!r}: set backbone: {start.backbone}"
        )


def start_encoder(
    start: Start, backbone_name: str | None = None, backbone_kwargs: Mapping[str, Any] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """A backbone built for `start` and loaded with its weights, in eval mode, and the meta
    (`backbone`, `backbone_kwargs`, `preprocessing`) an encoder directory would record.

    The architecture is the one the start records (an `encoder.json` beside the file keeps
    its kwargs too), else `backbone_name`; one of them is needed."""
    from ssl_assets.ml.backbones import build_backbone

    kwargs = dict(backbone_kwargs or {})
    recorded: dict[str, Any] = {}
    for meta_name in ("encoder.json", "model.json"):
        if start.path.with_name(meta_name).is_file():
            recorded = json.loads(start.path.with_name(meta_name).read_text())
            kwargs = dict(recorded.get("backbone_kwargs") or {})
    name = start.backbone or backbone_name
    if name is None:
        raise ValueError(
            f"init_from {start.source!r}: which backbone are these weights for? name it"
        )
    check_backbone(start, name)
    backbone = build_backbone(name, **kwargs)
    load_start(backbone, start.path)
    if recorded.get("preprocessing"):  # what the weights were trained with wins
        backbone.preprocessing = dict(recorded["preprocessing"])
    backbone.eval()
    meta = {"backbone": name, "backbone_kwargs": kwargs}
    meta["preprocessing"] = dict(backbone.preprocessing)  # type: ignore[arg-type]
    return backbone, meta
