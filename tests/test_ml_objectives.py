"""SSL objectives against lightly's reference losses and hand-computed formulas."""

from __future__ import annotations

import copy
import math

# lightly is the reference, installed bare by `make setup` (see the Makefile): a missing
# reference must fail the suite, not skip it.
import lightly.loss as lightly_loss
import lightly.models.utils as lightly_utils
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_assets.ml.backbones import build_backbone
from ssl_assets.ml.objectives import (
    OBJECTIVES,
    DINOLoss,
    NegativeQueue,
    ObjectiveOutput,
    build_objective,
    byol_loss,
    cosine_momentum,
    info_nce_queue_loss,
    mae_loss,
    make_teacher,
    normalized_mse,
    nt_xent_loss,
    patchify,
    random_masking,
    unpatchify,
    update_momentum,
    vicreg_loss,
)

ATOL = 1e-5


# --------------------------------------------------------------------------- SimCLR


@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_nt_xent_matches_lightly_loss_and_gradients(temperature: float) -> None:
    torch.manual_seed(0)
    z0 = torch.randn(8, 16, requires_grad=True)
    z1 = torch.randn(8, 16, requires_grad=True)
    ours, acc = nt_xent_loss(z0, z1, temperature)
    ref = lightly_loss.NTXentLoss(temperature=temperature)(z0, z1)
    assert ours.item() == pytest.approx(ref.item(), abs=ATOL)
    g_ours = torch.autograd.grad(ours, [z0, z1])
    g_ref = torch.autograd.grad(ref, [z0, z1])
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    assert 0.0 <= acc.item() <= 1.0


def test_nt_xent_perfect_pairs_beat_random_pairs() -> None:
    torch.manual_seed(0)
    z = torch.randn(16, 32)
    aligned, acc = nt_xent_loss(z, z + 0.01 * torch.randn_like(z), 0.1)
    shuffled, _ = nt_xent_loss(z, torch.randn_like(z), 0.1)
    assert aligned < shuffled
    assert acc.item() == 1.0


# --------------------------------------------------------------------------- MoCo


def test_moco_infonce_with_queue_matches_lightly_memory_bank() -> None:
    torch.manual_seed(0)
    size, dim, n, temperature = 12, 8, 4, 0.2
    queue = NegativeQueue(size, dim, gather_distributed=False)
    ref = lightly_loss.NTXentLoss(temperature=temperature, memory_bank_size=(size, dim))
    ref.memory_bank.bank.copy_(queue.queue)
    ref.memory_bank.bank_ptr.zero_()
    for _ in range(5):  # wraps around the queue
        q = torch.randn(n, dim, requires_grad=True)
        k = torch.randn(n, dim)
        ours, _ = info_nce_queue_loss(q, k, queue.negatives(), temperature)
        queue.dequeue_and_enqueue(F.normalize(k, dim=1))
        theirs = ref(q, k)
        assert ours.item() == pytest.approx(theirs.item(), abs=ATOL)
        torch.testing.assert_close(queue.queue, ref.memory_bank.bank, atol=1e-6, rtol=0)


def test_moco_infonce_formula_by_hand() -> None:
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    loss, acc = info_nce_queue_loss(q, k, queue, temperature=0.5)
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.0) + math.exp(-2.0)))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert acc.item() == 1.0


def _keys(values: list[float]) -> torch.Tensor:
    return torch.tensor(values).view(-1, 1).repeat(1, 2)


def test_queue_is_fifo_and_wraps_around() -> None:
    queue = NegativeQueue(size=5, dim=2, gather_distributed=False)
    queue.dequeue_and_enqueue(_keys([1, 2]))
    queue.dequeue_and_enqueue(_keys([3, 4]))
    assert int(queue.ptr) == 4
    queue.dequeue_and_enqueue(_keys([5, 6]))  # 6 wraps to slot 0, dequeuing the oldest entry
    assert int(queue.ptr) == 1
    assert queue.queue[:, 0].tolist() == [6, 2, 3, 4, 5]
    assert queue.ordered()[:, 0].tolist() == [2, 3, 4, 5, 6]  # oldest -> newest
    queue.dequeue_and_enqueue(_keys([7, 8, 9, 10, 11, 12, 13]))  # more than the queue holds
    assert queue.ordered()[:, 0].tolist() == [9, 10, 11, 12, 13]


def test_queue_is_a_checkpointable_buffer() -> None:
    queue = NegativeQueue(size=6, dim=3, gather_distributed=False)
    queue.dequeue_and_enqueue(torch.ones(4, 3))
    state = queue.state_dict()
    assert set(state) == {"queue", "ptr"}
    restored = NegativeQueue(size=6, dim=3, gather_distributed=False)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.queue, queue.queue)
    assert int(restored.ptr) == 4
    assert not any(p.requires_grad for p in queue.parameters())


def test_moco_objective_enqueues_key_encoder_outputs() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("small_cnn", widths=(8, 16), strides=(2, 2), norm="group")
    moco = build_objective("moco", backbone=backbone, queue_size=8, hidden_dim=16, out_dim=8)
    views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    out = moco(views, backbone)
    out.loss.backward()
    expected_keys = F.normalize(moco.key_head(moco.key_backbone(views[1])), dim=1)
    torch.testing.assert_close(moco.queue.queue[:4], expected_keys, atol=1e-6, rtol=0)
    assert int(moco.queue.ptr) == 4
    assert all(p.grad is None for p in moco.key_backbone.parameters())
    moco.eval()  # evaluation does not touch the queue
    with torch.no_grad():
        moco(views, backbone)
    assert int(moco.queue.ptr) == 4
    assert "queue.queue" in moco.state_dict()


# --------------------------------------------------------------------------- momentum


def test_update_momentum_is_an_ema_of_parameters() -> None:
    torch.manual_seed(0)
    online = nn.Linear(3, 2)
    teacher = make_teacher(online)
    assert all(not p.requires_grad for p in teacher.parameters())
    before = [p.clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    update_momentum(online, teacher, m=0.9)
    for t, b, o in zip(teacher.parameters(), before, online.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    update_momentum(online, teacher, m=0.0)  # m = 0 copies the online weights
    for t, o in zip(teacher.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(t, o)
    with pytest.raises(ValueError):
        update_momentum(online, teacher, m=1.5)


def test_cosine_momentum_schedule_rises_from_base_to_one() -> None:
    assert cosine_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert cosine_momentum(100, 100, 0.996) == pytest.approx(1.0)
    assert cosine_momentum(500, 100, 0.996) == pytest.approx(1.0)
    values = [cosine_momentum(s, 10, 0.99) for s in range(11)]
    assert values == sorted(values)


# --------------------------------------------------------------------------- BYOL


def test_byol_normalized_mse_by_hand() -> None:
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    z = torch.tensor([[0.0, 3.0], [2.0, 0.0]])
    # cos = 0 -> 2 ; cos = 1/sqrt(2) -> 2 - sqrt(2)
    assert normalized_mse(p, z).item() == pytest.approx((2.0 + 2.0 - math.sqrt(2.0)) / 2, abs=1e-6)
    same = torch.tensor([[1.0, 2.0]])
    assert normalized_mse(same, 5 * same).item() == pytest.approx(0.0, abs=1e-6)
    assert normalized_mse(same, -same).item() == pytest.approx(4.0, abs=1e-6)
    # symmetric: L = d(p0, z1') + d(p1, z0')
    loss = byol_loss(same, -same, z0_target=same, z1_target=same)
    assert loss.item() == pytest.approx(0.0 + 4.0, abs=1e-6)


def test_byol_target_gets_no_gradient_and_follows_cosine_schedule() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("small_cnn", widths=(8, 16), strides=(2, 2))
    byol = build_objective("byol", backbone=backbone, hidden_dim=16, out_dim=8)
    views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    out = byol(views, backbone)
    out.loss.backward()
    assert 0.0 <= out.loss.item() <= 8.0
    assert all(p.grad is None for p in byol.target_backbone.parameters())
    target_before = [p.clone() for p in byol.target_projector.parameters()]
    logs = byol.update_teacher(backbone, step=0, max_steps=10)
    assert logs["momentum"] == pytest.approx(0.996)
    for t, b, o in zip(
        byol.target_projector.parameters(), target_before, byol.projector.parameters(), strict=True
    ):
        torch.testing.assert_close(t, 0.996 * b + 0.004 * o)


# --------------------------------------------------------------------------- VICReg


@pytest.mark.parametrize("params", [(25.0, 25.0, 1.0), (10.0, 5.0, 2.0)])
def test_vicreg_matches_lightly(params: tuple[float, float, float]) -> None:
    torch.manual_seed(0)
    z_a = torch.randn(8, 16, requires_grad=True)
    z_b = torch.randn(8, 16, requires_grad=True)
    lam, mu, nu = params
    ours, terms = vicreg_loss(z_a, z_b, lam, mu, nu)
    ref = lightly_loss.VICRegLoss(lambda_param=lam, mu_param=mu, nu_param=nu)(z_a, z_b)
    assert ours.item() == pytest.approx(ref.item(), abs=ATOL)
    g_ours = torch.autograd.grad(ours, [z_a, z_b])
    g_ref = torch.autograd.grad(ref, [z_a, z_b])
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    assert set(terms) == {"invariance", "variance", "covariance"}


def test_vicreg_defaults_and_terms_on_a_hand_case() -> None:
    obj = build_objective(
        "vicreg",
        backbone=build_backbone("small_cnn", widths=(8,), strides=(2,)),
        hidden_dim=8,
        out_dim=8,
    )
    assert (obj.loss_fn.lambda_param, obj.loss_fn.mu_param, obj.loss_fn.nu_param) == (25, 25, 1)
    # identical branches with unit-variance, uncorrelated dims: only the tiny eps term remains
    z = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]]) * math.sqrt(3 / 4)
    loss, terms = vicreg_loss(z, z.clone())
    assert terms["invariance"].item() == 0.0
    assert terms["covariance"].item() == pytest.approx(0.0, abs=1e-12)
    assert terms["variance"].item() == pytest.approx(0.0, abs=1e-6)
    assert loss.item() == pytest.approx(0.0, abs=1e-4)


# --------------------------------------------------------------------------- DINO


def test_dino_multicrop_matches_lightly_including_centre() -> None:
    torch.manual_seed(0)
    k, n = 32, 6
    ours = DINOLoss(out_dim=k, teacher_temp=0.04, student_temp=0.1, center_momentum=0.9)
    ref = lightly_loss.DINOLoss(
        output_dim=k, warmup_teacher_temp=0.04, teacher_temp=0.04, student_temp=0.1
    )
    for _ in range(2):  # first step (zero centre) and a second one with the updated centre
        teacher = [torch.randn(n, k) for _ in range(2)]
        student = [torch.randn(n, k, requires_grad=True) for _ in range(5)]  # 2 global + 3 local
        a = ours(student, teacher, step=0)
        b = ref(teacher, student, teacher_temp=0.04)
        assert a.item() == pytest.approx(b.item(), abs=ATOL)
        torch.testing.assert_close(ours.center, ref.center.view(1, k), atol=1e-6, rtol=0)
        ga = torch.autograd.grad(a, student)
        gb = torch.autograd.grad(b, student)
        for x, y in zip(ga, gb, strict=True):
            torch.testing.assert_close(x, y, atol=ATOL, rtol=0)


def test_dino_teacher_temperature_warmup() -> None:
    loss = DINOLoss(8, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_steps=10)
    assert loss.teacher_temperature(0) == pytest.approx(0.04)
    assert loss.teacher_temperature(5) == pytest.approx(0.055)
    assert loss.teacher_temperature(10) == pytest.approx(0.07)
    assert loss.teacher_temperature(1000) == pytest.approx(0.07)
    torch.manual_seed(0)
    teacher = [torch.randn(4, 8) for _ in range(2)]
    student = [torch.randn(4, 8) for _ in range(2)]
    ref = lightly_loss.DINOLoss(output_dim=8, student_temp=0.1)
    got = loss(student, teacher, step=5)
    assert got.item() == pytest.approx(ref(teacher, student, teacher_temp=0.055).item(), abs=ATOL)


def test_dino_objective_multicrop_with_vit_and_cnn() -> None:
    torch.manual_seed(0)
    views = [torch.randn(3, 3, 32, 32) for _ in range(2)] + [
        torch.randn(3, 3, 16, 16) for _ in range(2)
    ]
    for backbone in (
        build_backbone("vit", embed_dim=16, depth=1, num_heads=2),
        build_backbone("small_cnn", widths=(8, 16), strides=(2, 2)),
    ):
        dino = build_objective(
            "dino", backbone=backbone, out_dim=32, hidden_dim=16, bottleneck_dim=8
        )
        out = dino(views, backbone, step=0)
        out.loss.backward()
        assert torch.isfinite(out.loss)
        assert dino.loss_fn.center.abs().sum() > 0  # centre moved
        assert all(p.grad is None for p in dino.teacher_head.parameters())
        assert dino.update_teacher(backbone, 0, 10)["momentum"] == pytest.approx(0.996)


# --------------------------------------------------------------------------- MAE


def test_patchify_round_trip_and_order_match_lightly() -> None:
    torch.manual_seed(0)
    images = torch.randn(2, 3, 8, 8)
    patches = patchify(images, 4)
    assert patches.shape == (2, 4, 48)
    torch.testing.assert_close(patches, lightly_utils.patchify(images, 4))
    torch.testing.assert_close(unpatchify(patches, 4, 3, 8, 8), images)


def test_random_masking_splits_every_sample() -> None:
    gen = torch.Generator().manual_seed(0)
    keep, masked = random_masking(5, 16, 0.75, generator=gen)
    assert keep.shape == (5, 4) and masked.shape == (5, 12)
    for row_keep, row_mask in zip(keep, masked, strict=True):
        assert sorted(torch.cat([row_keep, row_mask]).tolist()) == list(range(16))
    assert not torch.equal(keep[0].sort().values, keep[1].sort().values)


def test_mae_loss_counts_masked_patches_only() -> None:
    target = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 10.0]]])
    pred = torch.zeros_like(target)
    mask = torch.tensor([[1.0, 0.0]])  # only the first patch was removed
    assert mae_loss(pred, target, mask).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    # per-patch normalisation: (t - mean) / sqrt(unbiased var + eps); for pred = 0 the loss is
    # sum((t - m)^2) / (var + eps) / P = (P - 1) / P (up to eps)
    normed = mae_loss(pred, target, mask, norm_pix_loss=True).item()
    assert normed == pytest.approx(0.75, abs=1e-5)
    # a perfect prediction of the masked patch gives 0 whatever the visible patch holds
    pred_ok = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]]])
    assert mae_loss(pred_ok, target, mask).item() == 0.0


def test_mae_objective_reconstructs_masked_patches() -> None:
    torch.manual_seed(0)
    vit = build_backbone("vit", embed_dim=16, depth=1, num_heads=2)
    mae = build_objective(
        "mae", backbone=vit, decoder_dim=16, decoder_depth=1, decoder_heads=2, mask_ratio=0.75
    )
    mae.generator = torch.Generator().manual_seed(0)
    out = mae([torch.randn(2, 3, 32, 32)], vit)
    out.loss.backward()
    assert out.logs["mask_ratio"].item() == pytest.approx(0.75)
    assert vit.patch_embed.weight.grad is not None
    with pytest.raises(TypeError):
        build_objective("mae", backbone=build_backbone("small_cnn"))


# --------------------------------------------------------------------------- registry, hybrid


def _tiny_configs() -> dict[str, dict]:
    return {
        "simclr": {"hidden_dim": 16, "out_dim": 8},
        "moco": {"hidden_dim": 16, "out_dim": 8, "queue_size": 16},
        "byol": {"hidden_dim": 16, "out_dim": 8},
        "vicreg": {"hidden_dim": 16, "out_dim": 16},
        "dino": {"hidden_dim": 16, "bottleneck_dim": 8, "out_dim": 32},
        "mae": {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2},
        "hybrid": {
            "components": [
                {"name": "simclr", "hidden_dim": 16, "out_dim": 8},
                {"name": "mae", "weight": 0.5, "decoder_dim": 16, "decoder_depth": 1},
            ]
        },
        "distill": {"teacher": build_backbone("small_cnn", widths=(8, 16), strides=(2, 2))},
    }


def test_every_registered_objective_builds_runs_and_logs() -> None:
    torch.manual_seed(0)
    configs = _tiny_configs()
    assert set(configs) == set(OBJECTIVES)
    views = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    for name, cfg in configs.items():
        backbone = build_backbone("vit", embed_dim=16, depth=1, num_heads=2)
        obj = build_objective(name, backbone=backbone, **copy.deepcopy(cfg))
        out = obj(views, backbone, step=0)
        assert isinstance(out, ObjectiveOutput)
        assert out.loss.dim() == 0 and torch.isfinite(out.loss), name
        assert "loss" in out.logs
        assert all(v.dim() == 0 and not v.requires_grad for v in out.logs.values()), name
        out.loss.backward()
        assert isinstance(obj.update_teacher(backbone, 1, 10), dict)
    with pytest.raises(ValueError, match="unknown objective"):
        build_objective("nope", backbone=build_backbone("small_cnn"))


class _CountingBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = build_backbone("small_cnn", widths=(8, 16), strides=(2, 2), norm="group")
        self.out_dim = self.net.out_dim
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


def test_hybrid_is_the_weighted_sum_of_its_components_with_one_backbone_pass() -> None:
    torch.manual_seed(0)
    backbone = _CountingBackbone()
    hybrid = build_objective(
        "hybrid",
        backbone=backbone,
        components=[
            {"name": "simclr", "hidden_dim": 16, "out_dim": 8, "head_batch_norm": False},
            {"name": "vicreg", "weight": 0.5, "hidden_dim": 16, "out_dim": 16},
        ],
    )
    views = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    out = hybrid(views, backbone)
    assert backbone.calls == 1  # both views batched once, shared by both components
    parts = {key: c(views, backbone).loss for key, c in hybrid.components.items()}
    expected = parts["simclr"] + 0.5 * parts["vicreg"]
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert out.logs["simclr/loss"].item() == pytest.approx(parts["simclr"].item(), rel=1e-6)
    backbone.calls = 0
    multi = build_objective(
        "hybrid",
        backbone=backbone,
        components=[
            {"name": "simclr", "hidden_dim": 16, "out_dim": 8},
            {"name": "dino", "hidden_dim": 16, "bottleneck_dim": 8, "out_dim": 16},
        ],
    )
    multi(views + [torch.randn(4, 3, 16, 16)], backbone)
    assert backbone.calls == 2  # the two global views once, the local view once
    with pytest.raises(ValueError, match="duplicate"):
        build_objective(
            "hybrid", backbone=backbone, components=[{"name": "simclr"}, {"name": "simclr"}]
        )
