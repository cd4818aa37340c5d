"""LoRA for linear and convolution layers: parameter-efficient fine-tuning of a frozen encoder.

Why: fine-tuning every weight of the encoder per downstream task costs a full copy of the
encoder per task and can overwrite what pre-training learnt; LoRA (Hu et al., 2022, "LoRA:
Low-Rank Adaptation of Large Language Models", arXiv:2106.09685) keeps the pre-trained weight W
frozen and learns a low-rank update, `W x + (alpha / r) B A x`, with B initialised to zero so
training starts exactly at the pre-trained function.

- `nn.Linear` (ViT attention/MLP): A is r x in, B is out x r.
- `nn.Conv2d` (1x1 and 3x3 by default): A is a conv with the base layer's kernel, stride,
  padding and dilation and r output channels, B a 1x1 conv back to the output channels (the
  conv LoRA of LyCORIS / PEFT). The update is linear in the input, so it merges exactly into one
  conv weight: `W + s * einsum(B, A)`.

`apply_lora` wraps layers in place and freezes every other parameter of the module; the
wrapped layers' original tensors are left untouched (`lora_base_state_dict` returns them under
their original names, to check). `merge_lora` returns a plain copy with the updates folded in,
which `build_backbone` can load without knowing about LoRA.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LoRALinear(nn.Module):
    """`base(x) + scaling * x A^T B^T` around a frozen `nn.Linear`."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float = 8.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank = rank
        self.scaling = alpha / rank
        w = base.weight
        self.lora_a = nn.Parameter(
            torch.empty(rank, base.in_features, device=w.device, dtype=w.dtype)
        )
        self.lora_b = nn.Parameter(
            torch.zeros(base.out_features, rank, device=w.device, dtype=w.dtype)
        )
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as PEFT / nn.Linear

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scaling

    def delta_weight(self) -> Tensor:
        return (self.lora_b @ self.lora_a) * self.scaling

    def merged(self) -> nn.Linear:
        out = copy.deepcopy(self.base)
        with torch.no_grad():
            out.weight.add_(self.delta_weight().to(out.weight.dtype))
        for p in out.parameters():
            p.requires_grad_(True)
        return out


class LoRAConv2d(nn.Module):
    """`base(x) + scaling * B(A(x))` around a frozen `nn.Conv2d` (groups=1, zero padding)."""

    def __init__(self, base: nn.Conv2d, rank: int = 4, alpha: float = 8.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if base.groups != 1 or base.padding_mode != "zeros":
            raise ValueError("LoRAConv2d supports groups=1 convolutions with zero padding")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank = rank
        self.scaling = alpha / rank
        w = base.weight
        kh, kw = base.kernel_size
        self.lora_a = nn.Parameter(
            torch.empty(rank, base.in_channels, kh, kw, device=w.device, dtype=w.dtype)
        )
        self.lora_b = nn.Parameter(
            torch.zeros(base.out_channels, rank, 1, 1, device=w.device, dtype=w.dtype)
        )
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        b = self.base
        down = F.conv2d(x, self.lora_a, None, b.stride, b.padding, b.dilation)
        return b(x) + F.conv2d(down, self.lora_b) * self.scaling

    def delta_weight(self) -> Tensor:
        return torch.einsum("or,rikl->oikl", self.lora_b[:, :, 0, 0], self.lora_a) * self.scaling

    def merged(self) -> nn.Conv2d:
        out = copy.deepcopy(self.base)
        with torch.no_grad():
            out.weight.add_(self.delta_weight().to(out.weight.dtype))
        for p in out.parameters():
            p.requires_grad_(True)
        return out


LORA_TYPES = (LoRALinear, LoRAConv2d)


def apply_lora(
    module: nn.Module,
    rank: int = 4,
    alpha: float = 8.0,
    targets: Sequence[str] = ("linear", "conv"),
    conv_kernel_sizes: Sequence[int] = (1, 3),
) -> list[str]:
    """Wrap matching layers of `module` in place; freeze all its other parameters.

    `targets`: "linear" and/or "conv"; convs are wrapped when square with a kernel in
    `conv_kernel_sizes` (ViT patch embedding, 4x4, is left alone by default). Returns the
    wrapped layers' names; raises if nothing matched (a silent no-op would "fine-tune" nothing).
    """
    unknown = set(targets) - {"linear", "conv"}
    if unknown:
        raise ValueError(f"unknown LoRA targets {sorted(unknown)}; use 'linear' and/or 'conv'")
    for p in module.parameters():
        p.requires_grad_(False)
    wrapped: list[str] = []

    def visit(parent: nn.Module, prefix: str) -> None:
        for name, child in list(parent.named_children()):
            full = f"{prefix}{name}"
            if isinstance(child, LORA_TYPES):
                continue
            if "linear" in targets and isinstance(child, nn.Linear):
                setattr(parent, name, LoRALinear(child, rank, alpha))
                wrapped.append(full)
            elif (
                "conv" in targets
                and isinstance(child, nn.Conv2d)
                and child.groups == 1
                and child.padding_mode == "zeros"
                and child.kernel_size[0] == child.kernel_size[1]
                and child.kernel_size[0] in conv_kernel_sizes
            ):
                setattr(parent, name, LoRAConv2d(child, rank, alpha))
                wrapped.append(full)
            else:
                visit(child, f"{full}.")

    visit(module, "")
    if not wrapped:
        raise ValueError(f"no layer matched LoRA targets {list(targets)}")
    return wrapped


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The trainable LoRA factors (A and B of every wrapped layer)."""
    return [p for m in module.modules() if isinstance(m, LORA_TYPES) for p in (m.lora_a, m.lora_b)]


def lora_base_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """`module`'s state_dict without LoRA factors, under the names the unwrapped module had
    (`x.base.weight` -> `x.weight`): compare it to the encoder's original state_dict."""
    wrappers = [
        f"{n}." if n else "" for n, m in module.named_modules() if isinstance(m, LORA_TYPES)
    ]
    out: dict[str, Tensor] = {}
    for key, value in module.state_dict().items():
        name = key
        for prefix in wrappers:
            rest = key[len(prefix) :] if key.startswith(prefix) else None
            if rest in ("lora_a", "lora_b"):
                name = ""
            elif rest is not None and rest.startswith("base.") and "." not in rest[5:]:
                name = prefix + rest[5:]
        if name:
            out[name] = value
    return out


def merge_lora(module: nn.Module) -> nn.Module:
    """A deep copy of `module` with every LoRA wrapper replaced by its merged plain layer."""
    merged = copy.deepcopy(module)

    def visit(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            if isinstance(child, LORA_TYPES):
                setattr(parent, name, child.merged())
            else:
                visit(child)

    visit(merged)
    return merged
