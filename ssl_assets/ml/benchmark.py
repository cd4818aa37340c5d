"""Throughput micro-benchmarks for the CPU training path: `python -m ssl_assets.ml.benchmark`.

Why: the project trains on small CPU machines, so the figures that decide batch sizes and epoch
budgets are (a) images/s of one SimCLR forward+backward+SGD step of an encoder (two 32x32 views
per image, as in SimCLR, arXiv:2002.05709) and (b) images/s of the batched augmentation
producing those views. Each figure is the best of a few timed repeats after a warm-up, since
shared machines add noise that only ever slows a run down.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch

from ssl_assets.ml.augment import build_augmentation
from ssl_assets.ml.backbones import build_backbone
from ssl_assets.ml.objectives import build_objective


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (allocations, oneDNN primitive creation)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def encoder_throughput(
    backbone: str = "small_cnn",
    batch_size: int = 256,
    image_size: int = 32,
    repeats: int = 5,
    objective: str = "simclr",
    objective_cfg: dict[str, Any] | None = None,
    **backbone_cfg: Any,
) -> float:
    """Images/s of one training step (two views per image, forward + backward + SGD step)."""
    torch.manual_seed(0)
    net = build_backbone(backbone, **backbone_cfg)
    cfg = {"hidden_dim": 256, "out_dim": 128} if objective == "simclr" else {}
    obj = build_objective(objective, backbone=net, **{**cfg, **(objective_cfg or {})})
    params = [p for p in list(net.parameters()) + list(obj.parameters()) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    views = [torch.randn(batch_size, 3, image_size, image_size) for _ in range(2)]

    def step() -> None:
        out = obj(views, net)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return batch_size / _best_seconds(step, repeats)


def augment_throughput(
    method: str = "simclr",
    batch_size: int = 256,
    image_size: int = 32,
    repeats: int = 5,
    **overrides: Any,
) -> float:
    """Images/s of producing the preset's views from a uint8 batch."""
    images = torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8)
    aug = build_augmentation(method, image_size, **overrides)
    gen = torch.Generator().manual_seed(0)
    return batch_size / _best_seconds(lambda: aug(images, gen), repeats)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    b, r = args.batch_size, args.repeats
    results = {
        "torch_threads": torch.get_num_threads(),
        "small_cnn_simclr_images_per_s": encoder_throughput(batch_size=b, repeats=r),
        "small_cnn_groupnorm_simclr_images_per_s": encoder_throughput(
            batch_size=b, repeats=r, norm="group"
        ),
        "small_cnn_stride2_stem_simclr_images_per_s": encoder_throughput(
            batch_size=b, repeats=r, widths=(32, 64, 128, 256), strides=(2, 2, 2, 2)
        ),
        "augment_simclr_2views_images_per_s": augment_throughput("simclr", b, repeats=r),
        "augment_simclr_2views_with_blur_images_per_s": augment_throughput(
            "simclr", b, repeats=r, blur_prob=0.5
        ),
        "augment_byol_2views_images_per_s": augment_throughput("byol", b, repeats=r, blur_prob=1.0),
        "augment_dino_2plus6views_images_per_s": augment_throughput("dino", b, repeats=r),
    }
    print(json.dumps({k: round(v, 1) for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
