"""The photo setting at 224 px: training throughput, memory in the number of images, storage.

Why: the photo profile stores 256 px images and trains on 224 px random-resized crops read a
batch at a time from the catalog files (`ssl_assets.ml.data.StreamedImages`). This script is
the evidence that its data path costs (almost) nothing, that memory does not grow with the
catalog, and which storage format to keep the catalog in. Sections (`--section`, default all):

- `throughput`: SimCLR on a 256 px catalog (`--images`, random pixels: throughput does not
  depend on them) with `--backbone` (default resnet18) at batch `--batch` (default 64), crops
  of 224 px, interleaved rounds after a warm-up, medians:
  *bare* is the model, loss and optimiser (same parameter groups, same autocast and memory
  format) stepping on two pre-made augmented view tensors already on the device; *ours* is
  `ssl_assets.ml.train.train` itself (its own images/s: positioned reads from the `.npy`,
  batched augmentation on the device, step, schedule, logging; the next batch read and
  augmented in a prefetch thread when a core or a GPU is spare); *augmentation* is our two
  SimCLR views of uint8 batches, alone. Goals: ours / bare >= 0.95, augmentation / ours >= 3.
  On CUDA each side also reports its peak GPU memory.
- `rss`: the peak resident memory of a training process (3 steps, same settings) on a
  1,000-image and on a 10,000-image catalog (192 MB and 1.9 GB on disk), each in a fresh
  process; goal: within 10 % of each other.
- `storage`: 256 px photo crops (random crops of the two photographs scikit-learn ships,
  re-toned and flipped: real photo statistics) stored as raw uint8 rows (`.npy`, what the
  catalog is) and as encoded shards (JPEG and WebP at quality 90, one file of concatenated
  images plus offsets): disk per image, and images/s each can feed (raw: page cache dropped
  first and warm; JPEG: Pillow on 1 and 2 threads, torchvision's `decode_jpeg` in batches, on
  the GPU too when there is one; WebP: Pillow), with the JPEG's PSNR.

    .venv/bin/python benchmarks/photo_224.py                        # CPU, ResNet-18, batch 64
    .venv/bin/python benchmarks/photo_224.py --section storage
    .venv/bin/python benchmarks/photo_224.py --section throughput --device cuda \\
        --backbone resnet50 --batch 256 --precision bf16 --channels-last --threads 0
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssl_assets.ml.augment import build_augmentation  # noqa: E402
from ssl_assets.ml.backbones import build_backbone  # noqa: E402
from ssl_assets.ml.config import TrainConfig  # noqa: E402
from ssl_assets.ml.data import StreamedImages  # noqa: E402
from ssl_assets.ml.model import SSLModel  # noqa: E402
from ssl_assets.ml.objectives import build_objective  # noqa: E402
from ssl_assets.ml.optim import build_optimizer  # noqa: E402
from ssl_assets.ml.train import train  # noqa: E402

RESOLUTION, CROP = 256, 224
HEAD = {"hidden_dim": 512, "out_dim": 128, "temperature": 0.2}


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write_catalog(path: Path, n: int, seed: int = 0) -> Path:
    """An n x 256 x 256 x 3 uint8 `.npy` of random pixels, written a chunk at a time."""
    rng = np.random.default_rng(seed)
    array = np.lib.format.open_memmap(path, "w+", np.uint8, (n, RESOLUTION, RESOLUTION, 3))
    for start in range(0, n, 256):
        stop = min(n, start + 256)
        array[start:stop] = rng.integers(
            0, 256, (stop - start, RESOLUTION, RESOLUTION, 3), np.uint8
        )
    array.flush()
    del array
    return path


# --------------------------------------------------------------------------- throughput


def config(args: argparse.Namespace, steps: int) -> TrainConfig:
    return TrainConfig(
        method="simclr",
        objective=dict(HEAD),
        backbone=args.backbone,
        image_size=CROP,
        batch_size=args.batch,
        max_steps=steps,
        lr=1e-3,
        warmup_steps=0,
        precision=args.precision,
        channels_last=args.channels_last,
        device=args.device,
        num_threads=torch.get_num_threads(),
        in_memory=False,
        checkpoint_every=0,
        keep_checkpoints=1,
        monitor_samples=16,
        knn_samples=16,
    )


def _autocast(args: argparse.Namespace) -> Any:
    if args.precision == "bf16" or (args.precision == "auto" and args.device.startswith("cuda")):
        return torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


def _sync(args: argparse.Namespace) -> None:
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_side(args: argparse.Namespace, images: StreamedImages) -> Callable[[int], float]:
    aug = build_augmentation("simclr", CROP)
    batch = images.batch(torch.arange(args.batch)).to(args.device)
    views = aug(batch, torch.Generator().manual_seed(0))
    if args.channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]

    def run(steps: int) -> float:
        torch.manual_seed(0)
        backbone = build_backbone(args.backbone)
        model = SSLModel(backbone, build_objective("simclr", backbone=backbone, **HEAD))
        model = model.to(args.device)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
        opt = build_optimizer(config(args, steps), model)
        model.train()
        _sync(args)
        start = time.perf_counter()
        for _ in range(steps):
            with _autocast(args):
                out = model(views)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            float(out.logs["loss"])  # what our loop reads per step
        _sync(args)
        return steps * args.batch / (time.perf_counter() - start)

    return run


def ours_side(args: argparse.Namespace, parts: list, workdir: Path) -> Callable[[int], float]:
    counter = iter(range(10**6))

    def run(steps: int) -> float:
        result = train(config(args, steps), parts, workdir / f"ours{next(counter)}")
        return float(result.history[-1]["images_per_s"])

    return run


def augment_side(args: argparse.Namespace, images: StreamedImages) -> Callable[[int], float]:
    aug = build_augmentation("simclr", CROP)
    gen = torch.Generator().manual_seed(0)
    batches = [images.batch(torch.arange(i * args.batch, (i + 1) * args.batch)) for i in range(2)]
    batches = [b.to(args.device) for b in batches]

    def run(steps: int) -> float:
        _sync(args)
        start = time.perf_counter()
        for i in range(2 * steps):
            aug(batches[i % 2], gen)
        _sync(args)
        return 2 * steps * args.batch / (time.perf_counter() - start)

    return run


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="photo224-") as tmp:
        workdir = Path(tmp)
        path = write_catalog(workdir / "catalog.npy", args.images)
        parts = [[str(path), None]]
        images = StreamedImages(parts)
        sides = {
            "bare_step": bare_side(args, images),
            "ours": ours_side(args, parts, workdir),
            "augmentation_only": augment_side(args, images),
        }
        samples: dict[str, list[float]] = {name: [] for name in sides}
        peak: dict[str, float] = {}
        for round_ in range(args.rounds + 1):  # round 0 warms up (allocator, oneDNN, cuDNN)
            for name, run in sides.items():
                if args.device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                value = run(args.steps if round_ else 1)
                if args.device.startswith("cuda"):
                    peak[name] = max(peak.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**30)
                if round_:
                    samples[name].append(value)
                    say(f"  {name}: {value:.1f} images/s")
        images.close()
    med = {name: statistics.median(v) for name, v in samples.items()}
    report: dict[str, Any] = {
        "backbone": args.backbone,
        "batch": args.batch,
        "crop": CROP,
        "catalog_resolution": RESOLUTION,
        "device": args.device,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "median_images_per_s": {k: round(v, 1) for k, v in med.items()},
        "all_images_per_s": {k: [round(x, 1) for x in v] for k, v in samples.items()},
        "ours_over_bare_step": round(med["ours"] / med["bare_step"], 3),
        "augmentation_over_ours": round(med["augmentation_only"] / med["ours"], 2),
        "goals": {"ours_over_bare_step": ">= 0.95", "augmentation_over_ours": ">= 3"},
    }
    if peak:
        report["peak_gpu_memory_gib"] = {k: round(v, 2) for k, v in peak.items()}
    return report


# --------------------------------------------------------------------------- memory


def rss_child(args: argparse.Namespace) -> None:
    """One training run on `--catalog`; prints the process's peak RSS."""
    with tempfile.TemporaryDirectory(prefix="photo224-rss-") as tmp:
        result = train(config(args, args.steps), [[args.catalog, None]], Path(tmp))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": round(peak_mib, 1), "steps": result.step}))


def rss(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="photo224-rss-") as tmp:
        for n in args.rss_sizes:
            path = write_catalog(Path(tmp) / f"catalog{n}.npy", n, seed=n)
            command = [sys.executable, __file__, "--section", "rss-child", "--catalog", str(path)]
            command += ["--steps", str(args.steps), "--threads", str(args.threads)]
            command += ["--backbone", args.backbone, "--batch", str(args.batch)]
            child = subprocess.run(command, capture_output=True, text=True, check=True)
            peak = json.loads(child.stdout.strip().splitlines()[-1])["peak_rss_mib"]
            out[f"{n}_images"] = {
                "catalog_mib": round(path.stat().st_size / 2**20),
                "peak_rss_mib": peak,
            }
            say(f"  {n} images: peak RSS {peak:.0f} MiB")
            path.unlink()
    small, large = (out[f"{n}_images"]["peak_rss_mib"] for n in args.rss_sizes)
    out[f"ratio_{args.rss_sizes[1]}_over_{args.rss_sizes[0]}"] = round(large / small, 3)
    out["goal"] = "within 10 % (0.9 .. 1.1)"
    return out


# --------------------------------------------------------------------------- storage


def photo_crops(n: int, seed: int = 0) -> np.ndarray:
    """n 256 px crops of scikit-learn's two sample photographs, re-toned and flipped."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    sources = [Image.fromarray(img) for img in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = np.empty((n, RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
    for i in range(n):
        src = sources[i % len(sources)]
        side = int(min(src.size) * rng.uniform(0.3, 1.0))
        x0 = int(rng.integers(0, src.size[0] - side + 1))
        y0 = int(rng.integers(0, src.size[1] - side + 1))
        crop = src.crop((x0, y0, x0 + side, y0 + side)).resize(
            (RESOLUTION, RESOLUTION), Image.Resampling.BICUBIC
        )
        pixels = np.asarray(crop, dtype=np.float32) * rng.uniform(0.8, 1.2, 3)
        pixels = pixels[:, ::-1] if rng.random() < 0.5 else pixels
        out[i] = np.clip(pixels, 0, 255).astype(np.uint8)
    return out


def _shard(images: np.ndarray, fmt: str, path: Path) -> tuple[np.ndarray, list[bytes]]:
    from PIL import Image

    blobs = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=fmt, quality=90)
        blobs.append(buf.getvalue())
    path.write_bytes(b"".join(blobs))
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    return offsets, blobs


def _rate(fn: Callable[[], int], repeats: int = 3) -> float:
    best = float("inf")
    count = 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def storage(args: argparse.Namespace) -> dict[str, Any]:
    from PIL import Image

    images = photo_crops(args.storage_images)
    n = len(images)
    out: dict[str, Any] = {"images": n, "resolution": RESOLUTION}
    with tempfile.TemporaryDirectory(prefix="photo224-storage-") as tmp:
        raw = Path(tmp) / "raw.npy"
        np.save(raw, images)
        streamed = StreamedImages([[str(raw), None]])
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0))

        def read_all() -> int:
            for start in range(0, n, 64):
                streamed.batch(order[start : start + 64])
            return n

        _drop_cache(raw)
        t0 = time.perf_counter()
        read_all()
        cold = n / (time.perf_counter() - t0)
        out["raw_uint8"] = {
            "bytes_per_image": round(raw.stat().st_size / n),
            "images_per_s_cold_page_cache": round(cold),
            "images_per_s_warm": round(_rate(read_all)),
        }
        streamed.close()
        for fmt in ("JPEG", "WEBP"):
            shard = Path(tmp) / f"shard.{fmt.lower()}"
            offsets, blobs = _shard(images, fmt, shard)
            entry: dict[str, Any] = {"bytes_per_image": round(int(offsets[-1]) / n)}

            def pil_decode(blob: bytes) -> np.ndarray:
                with Image.open(io.BytesIO(blob)) as im:
                    return np.asarray(im.convert("RGB"))

            entry["pillow_1_thread_images_per_s"] = round(
                _rate(lambda blobs=blobs: len([pil_decode(b) for b in blobs]))
            )
            with ThreadPoolExecutor(2) as pool:
                entry["pillow_2_threads_images_per_s"] = round(
                    _rate(lambda blobs=blobs: len(list(pool.map(pil_decode, blobs, chunksize=16))))
                )
            if fmt == "JPEG":
                entry.update(_torchvision_decode(blobs))
                decoded = np.stack([pil_decode(b) for b in blobs]).astype(np.float64)
                mse = float(((decoded - images) ** 2).mean())
                entry["psnr_db"] = round(10 * np.log10(255.0**2 / mse), 1)
            out[fmt.lower()] = entry
    raw_b = out["raw_uint8"]["bytes_per_image"]
    for fmt in ("jpeg", "webp"):
        out[fmt]["raw_over_encoded_disk"] = round(raw_b / out[fmt]["bytes_per_image"], 1)
    out["images_per_gb"] = {
        k: round(1e9 / out[k]["bytes_per_image"]) for k in ("raw_uint8", "jpeg", "webp")
    }
    return out


def _torchvision_decode(blobs: list[bytes]) -> dict[str, float]:
    from torchvision.io import decode_jpeg

    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    out = {
        "torchvision_decode_jpeg_cpu_batch64_images_per_s": round(
            _rate(
                lambda: sum(
                    len(decode_jpeg(tensors[i : i + 64])) for i in range(0, len(tensors), 64)
                )
            )
        )
    }
    if torch.cuda.is_available():

        def on_gpu() -> int:
            count = 0
            for i in range(0, len(tensors), 256):
                count += len(decode_jpeg(tensors[i : i + 256], device="cuda"))
            torch.cuda.synchronize()
            return count

        on_gpu()
        out["torchvision_decode_jpeg_cuda_batch256_images_per_s"] = round(_rate(on_gpu))
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--section", default="all", choices=["all", "throughput", "rss", "storage", "rss-child"]
    )
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (0: default)"
    )
    parser.add_argument("--images", type=int, default=512, help="catalog size for throughput")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--storage-images", type=int, default=400)
    parser.add_argument("--rss-sizes", type=int, nargs=2, default=[1_000, 10_000])
    parser.add_argument("--catalog", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.section == "rss-child":
        rss_child(args)
        return
    load_start = [round(x, 2) for x in os.getloadavg()]
    report: dict[str, Any] = {
        "machine": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
        }
    }
    if torch.cuda.is_available():
        report["machine"]["gpu"] = torch.cuda.get_device_name()
    for section, fn in (("throughput", throughput), ("rss", rss), ("storage", storage)):
        if args.section in ("all", section):
            say(f"{section} ...")
            report[section] = fn(args)
    report["machine"]["load_average_start_end"] = [
        load_start,
        [round(x, 2) for x in os.getloadavg()],
    ]
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)


if __name__ == "__main__":
    main()
