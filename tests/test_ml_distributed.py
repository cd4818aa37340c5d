"""Two CPU ranks (gloo) give the same SSL losses and gradients as one process on the whole batch.

The DDP contract of the objectives: SimCLR (and VICReg) gather embeddings with a
gradient-preserving all-gather, MoCo gathers keys before enqueueing, DINO all-reduces its centre.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssl_assets.ml.backbones import build_backbone
from ssl_assets.ml.objectives import DINOLoss, NegativeQueue, build_objective, nt_xent_loss
from ssl_assets.ml.objectives.vicreg import vicreg_loss

WORLD = 2
N_PER_RANK = 4

pytestmark = pytest.mark.skipif(
    not dist.is_available() or sys.platform == "win32", reason="needs torch.distributed (gloo)"
)


def _inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    n = WORLD * N_PER_RANK
    return {
        "z0": torch.randn(n, 8, generator=gen),
        "z1": torch.randn(n, 8, generator=gen),
        "keys": torch.randn(n, 4, generator=gen),
        "teacher": torch.randn(2, n, 16, generator=gen),
        "images0": torch.randn(n, 3, 16, 16, generator=gen),
        "images1": torch.randn(n, 3, 16, 16, generator=gen),
    }


def _model() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    backbone = build_backbone("small_cnn", widths=(8, 16), strides=(2, 2), norm="group")
    simclr = build_objective(
        "simclr", backbone=backbone, hidden_dim=16, out_dim=8, head_batch_norm=False
    )
    return backbone, simclr


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        data = _inputs()
        sl = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
        result: dict[str, object] = {}

        z0 = data["z0"][sl].clone().requires_grad_()
        z1 = data["z1"][sl].clone().requires_grad_()
        loss, _ = nt_xent_loss(z0, z1, temperature=0.5)
        loss.backward()
        result["ntxent"] = (loss.detach(), z0.grad, z1.grad)

        z0 = data["z0"][sl].clone().requires_grad_()
        z1 = data["z1"][sl].clone().requires_grad_()
        vloss, _ = vicreg_loss(z0, z1)
        vloss.backward()
        result["vicreg"] = (vloss.detach(), z0.grad, z1.grad)

        queue = NegativeQueue(size=12, dim=4)
        queue.queue.zero_()
        queue.dequeue_and_enqueue(data["keys"][sl])
        queue.dequeue_and_enqueue(data["keys"][sl])  # 16 keys into 12 slots: wraps around
        result["queue"] = (queue.ordered().clone(), int(queue.ptr))

        dino = DINOLoss(out_dim=16)
        dino([t for t in data["teacher"][:, sl]], [t for t in data["teacher"][:, sl]])
        result["center"] = dino.center.clone()

        # end to end: encoder + SimCLR objective, gradients averaged as DDP does
        backbone, simclr = _model()
        out = simclr([data["images0"][sl], data["images1"][sl]], backbone)
        out.loss.backward()
        grads = []
        for p in list(backbone.parameters()) + list(simclr.parameters()):
            g = p.grad.clone()
            dist.all_reduce(g)
            grads.append(g / WORLD)
        result["model"] = (out.loss.detach(), grads)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_process_on_the_concatenated_batch(tmp_path: Path) -> None:
    # fork: the children inherit the imported modules, which keeps this test a few seconds
    mp.start_processes(
        _worker,
        args=(str(tmp_path / "init"), str(tmp_path)),
        nprocs=WORLD,
        join=True,
        start_method="fork",
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    data = _inputs()

    # NT-Xent: mean of rank losses = full-batch loss; rank grads / WORLD = full-batch grads
    z0 = data["z0"].clone().requires_grad_()
    z1 = data["z1"].clone().requires_grad_()
    full, _ = nt_xent_loss(z0, z1, temperature=0.5)
    full.backward()
    mean_loss = sum(r["ntxent"][0] for r in ranks) / WORLD
    assert mean_loss.item() == pytest.approx(full.item(), abs=1e-5)
    torch.testing.assert_close(torch.cat([r["ntxent"][1] for r in ranks]) / WORLD, z0.grad)
    torch.testing.assert_close(torch.cat([r["ntxent"][2] for r in ranks]) / WORLD, z1.grad)

    # VICReg: variance/covariance over the global batch
    z0 = data["z0"].clone().requires_grad_()
    z1 = data["z1"].clone().requires_grad_()
    vfull, _ = vicreg_loss(z0, z1)
    vfull.backward()
    assert (sum(r["vicreg"][0] for r in ranks) / WORLD).item() == pytest.approx(vfull.item())
    torch.testing.assert_close(torch.cat([r["vicreg"][1] for r in ranks]) / WORLD, z0.grad)

    # MoCo queue: every rank holds the keys of all ranks, in rank order, oldest first
    keys = data["keys"]
    expected = torch.cat([keys, keys])[-12:]
    for r in ranks:
        queue, ptr = r["queue"]
        assert ptr == (2 * WORLD * N_PER_RANK) % 12
        torch.testing.assert_close(queue, expected)

    # DINO centre: global mean of the teacher outputs on every rank
    expected_center = 0.1 * data["teacher"].reshape(-1, 16).mean(dim=0, keepdim=True)
    for r in ranks:
        torch.testing.assert_close(r["center"], expected_center)

    # encoder + objective: loss and averaged parameter gradients equal one process
    backbone, simclr = _model()
    out = simclr([data["images0"], data["images1"]], backbone)
    out.loss.backward()
    params = list(backbone.parameters()) + list(simclr.parameters())
    assert (sum(r["model"][0] for r in ranks) / WORLD).item() == pytest.approx(out.loss.item())
    for r in ranks:
        for g, p in zip(r["model"][1], params, strict=True):
            torch.testing.assert_close(g, p.grad, atol=1e-5, rtol=1e-4)
