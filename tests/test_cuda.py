"""What only a GPU can show (`pytest -m cuda`, run by benchmarks/gpu_check.sh): the photo
setting trains on CUDA in bf16 and channels-last from a streamed 256 px catalog, its encoder
embeds on the GPU as on the CPU, and the GPU decodes JPEGs like the CPU. Skipped without CUDA."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_photo_training_on_cuda_in_bf16_channels_last_from_a_streamed_catalog(tmp_path):
    from ssl_assets.ml.config import TrainConfig
    from ssl_assets.ml.encoder_io import load_encoder
    from ssl_assets.ml.evaluate.features import embed_images
    from ssl_assets.ml.train import train

    catalog = np.random.default_rng(0).integers(0, 256, (96, 256, 256, 3), dtype=np.uint8)
    np.save(tmp_path / "catalog.npy", catalog)
    cfg = TrainConfig(
        backbone="resnet18",
        objective={"hidden_dim": 256, "out_dim": 64},
        batch_size=32,
        max_steps=3,
        precision="bf16",
        channels_last=True,
        device="cuda",
        in_memory=False,
        checkpoint_every=0,
        monitor_samples=32,
    )
    result = train(cfg, [[str(tmp_path / "catalog.npy"), None]], tmp_path / "ckpt")
    assert result.completed and np.isfinite(result.history[-1]["loss"])
    encoder, meta = load_encoder(result.metadata_path.parent)
    assert meta["preprocessing"]["input_size"] == 224
    on_cpu = embed_images(encoder, catalog[:8])
    on_gpu = embed_images(encoder.cuda(), catalog[:8])
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-3, rtol=1e-3)


def test_the_gpu_decodes_jpegs_like_the_cpu():
    from torchvision.io import decode_jpeg

    rng = np.random.default_rng(1)
    blobs = []
    for _ in range(4):
        buf = io.BytesIO()
        pixels = rng.integers(0, 256, (1, 1, 3)) + rng.normal(0, 20, (256, 256, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        blobs.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
    cpu = decode_jpeg(blobs)
    gpu = decode_jpeg(blobs, device="cuda")
    for a, b in zip(cpu, gpu, strict=True):
        assert b.is_cuda and a.shape == b.shape == (3, 256, 256)
        assert (a.int() - b.cpu().int()).abs().float().mean() < 2.0
