"""Batched augmentations: shapes, dtypes, per-sample randomness, determinism, torchvision parity."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from ssl_assets.ml import augment as A


def _images(n: int = 8, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=gen, dtype=torch.uint8)


@pytest.mark.parametrize(
    ("method", "sizes"),
    [
        ("simclr", [32, 32]),
        ("moco", [32, 32]),
        ("byol", [32, 32]),
        ("vicreg", [32, 32]),
        ("dino", [32, 32] + [16] * 6),
        ("mae", [32]),
    ],
)
def test_presets_return_float_views_of_the_right_shape(method: str, sizes: list[int]) -> None:
    aug = A.build_augmentation(method, image_size=32)
    views = aug(_images(), torch.Generator().manual_seed(0))
    assert [v.shape[-1] for v in views] == sizes
    for v in views:
        assert v.shape[:2] == (8, 3)
        assert v.dtype == torch.float32
        assert torch.isfinite(v).all()


def test_values_stay_in_range() -> None:
    gen = torch.Generator().manual_seed(0)
    for method in A.AUGMENTATION_PRESETS:
        raw = A.build_augmentation(method, 32, mean=None, std=None, blur_prob=0.5)
        for v in raw(_images(), gen):
            assert v.min() >= 0.0 and v.max() <= 1.0, method
    normed = A.build_augmentation("simclr", 32)(_images(), gen)
    lo = (0 - torch.tensor(A.IMAGENET_MEAN)) / torch.tensor(A.IMAGENET_STD)
    hi = (1 - torch.tensor(A.IMAGENET_MEAN)) / torch.tensor(A.IMAGENET_STD)
    for v in normed:
        assert (v >= lo.view(1, 3, 1, 1) - 1e-5).all() and (v <= hi.view(1, 3, 1, 1) + 1e-5).all()


def test_float_input_keeps_its_dtype_and_values() -> None:
    x = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    spec = A.ViewSpec(size=16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0)
    spec = replace(spec, gray_prob=0.0)
    out = A.augment_view(x, spec)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, x)


def test_each_sample_gets_its_own_crop_and_colours() -> None:
    same = _images(1).repeat(16, 1, 1, 1)  # 16 copies of one image
    aug = A.build_augmentation("simclr", 32)
    view0, view1 = aug(same, torch.Generator().manual_seed(0))
    flat = view0.flatten(1)
    distinct = {tuple(row.round(decimals=4).tolist()) for row in flat}
    assert len(distinct) == 16
    assert not torch.allclose(view0, view1)
    boxes = A.sample_crop_boxes(16, 32, 32, generator=torch.Generator().manual_seed(0))
    assert len(set(boxes[:, 2].tolist())) == 16  # 16 different crop widths


def test_seeded_generator_is_deterministic() -> None:
    images = _images()
    aug = A.build_augmentation("dino", 32, n_local_crops=2)
    a = aug(images, torch.Generator().manual_seed(123))
    b = aug(images, torch.Generator().manual_seed(123))
    c = aug(images, torch.Generator().manual_seed(124))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert not all(torch.equal(x, z) for x, z in zip(a, c, strict=True))


def test_crop_boxes_follow_torchvision_bounds() -> None:
    boxes = A.sample_crop_boxes(
        500, 24, 40, scale=(0.2, 0.6), generator=torch.Generator().manual_seed(0)
    )
    x0, y0, w, h = boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all()
    assert (x0 + w <= 40 + 1e-4).all() and (y0 + h <= 24 + 1e-4).all()
    area = w * h / (24 * 40)
    assert (area >= 0.2 - 1e-4).all() and (area <= 0.6 + 1e-4).all()
    aspect = w / h
    assert (aspect >= 3 / 4 - 1e-4).all() and (aspect <= 4 / 3 + 1e-4).all()


def test_full_box_is_identity_flip_mirrors_and_interior_matches_torchvision() -> None:
    x = torch.rand(3, 3, 16, 16)
    full = torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 3)
    torch.testing.assert_close(A.crop_and_resize(x, full, 16), x, atol=1e-5, rtol=0)
    flipped = A.crop_and_resize(x, full, 16, torch.tensor([True, False, True]))
    torch.testing.assert_close(flipped[0], x[0].flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(flipped[1], x[1], atol=1e-5, rtol=0)
    box = torch.tensor([[2.0, 3.0, 8.0, 6.0]] * 3)
    ours = A.crop_and_resize(x, box, 16)
    ref = TF.resized_crop(x, 3, 2, 6, 8, [16, 16], antialias=False)
    # identical except the outermost output pixels, which sample just outside the box instead
    # of clamping to its border
    torch.testing.assert_close(ours[..., 2:-2, 1:-1], ref[..., 2:-2, 1:-1], atol=1e-5, rtol=0)


def test_colour_ops_match_torchvision_per_sample() -> None:
    torch.manual_seed(0)
    x = torch.rand(6, 3, 8, 8)
    x[0] = 0.5  # gray pixels: hue undefined
    factors = torch.tensor([0.0, 0.5, 1.0, 1.3, 1.8, 0.9])
    shifts = torch.tensor([-0.5, -0.2, 0.0, 0.05, 0.3, 0.5])
    cases = [
        (A.adjust_brightness, TF.adjust_brightness, factors),
        (A.adjust_contrast, TF.adjust_contrast, factors),
        (A.adjust_saturation, TF.adjust_saturation, factors),
        (A.adjust_hue, TF.adjust_hue, shifts),
    ]
    for ours, ref, f in cases:
        got = ours(x.clone(), f)
        want = torch.stack([ref(x[i], float(f[i])) for i in range(6)])
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(A.rgb_to_grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)


def test_blur_matches_torchvision_with_per_sample_sigma() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 3, 12, 12)
    sigma = torch.tensor([0.3, 0.8, 1.5, 2.0])
    got = A.gaussian_blur(x, sigma, 5)
    want = torch.stack([TF.gaussian_blur(x[i], [5, 5], [float(sigma[i])] * 2) for i in range(4)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(A.gaussian_blur(x, torch.zeros(4), 5), x)  # sigma 0 = identity


def test_grayscale_solarize_and_jitter_probabilities() -> None:
    x = torch.rand(8, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    gray = A.random_grayscale(x, prob=1.0, generator=gen)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    assert torch.equal(A.random_grayscale(x, prob=0.0, generator=gen), x)
    sol = A.random_solarize(x, prob=1.0, threshold=0.5, generator=gen)
    torch.testing.assert_close(sol, torch.where(x >= 0.5, 1 - x, x))
    assert torch.equal(A.color_jitter(x, prob=0.0, generator=gen), x)
    jittered = A.color_jitter(x, prob=1.0, generator=gen)
    assert not torch.allclose(jittered, x)


def test_single_channel_images() -> None:
    aug = A.build_augmentation("byol", 32, mean=[0.5], std=[0.25], blur_prob=1.0)
    views = aug(_images(c=1), torch.Generator().manual_seed(0))
    assert all(v.shape == (8, 1, 32, 32) for v in views)


def test_small_image_protocol_disables_blur_unless_asked() -> None:
    assert all(v.blur_prob == 0.0 for v in A.build_augmentation("byol", 32).views)
    assert A.build_augmentation("byol", 96).views[0].blur_prob == 1.0
    assert all(v.blur_prob == 0.3 for v in A.build_augmentation("byol", 32, blur_prob=0.3).views)
    with pytest.raises(ValueError):
        A.build_augmentation("simclr", 32, not_a_field=1)
    with pytest.raises(ValueError):
        A.build_augmentation("dino", 32, size=24)  # would also resize the local crops
    with pytest.raises(ValueError):
        A.build_augmentation("nope", 32)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_views_equal_cpu_views_for_the_same_seed() -> None:
    images = _images()
    aug = A.build_augmentation("byol", 32, blur_prob=0.5)
    cpu = aug(images, torch.Generator().manual_seed(0))
    gpu = aug(images.cuda(), torch.Generator().manual_seed(0))
    for a, b in zip(cpu, gpu, strict=True):
        assert b.is_cuda
        torch.testing.assert_close(a, b.cpu(), atol=1e-4, rtol=0)
