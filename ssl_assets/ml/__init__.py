"""Plain-PyTorch self-supervised learning core: objectives, backbones, heads, augmentations.

Why a separate package: everything here is ordinary `torch.nn` code with no Dagster (or any
orchestration) import, so the same modules run in unit tests, inside a Dagster step and under
`torchrun`. The Dagster layer only wires these pieces together and records their outputs.

Modules:

- `objectives`: one file per method (SimCLR, MoCo v2, BYOL, VICReg, DINO, MAE, distillation
  from a frozen teacher) plus a weighted `hybrid`; `build_objective(name, **cfg)` is the
  registry.
- `backbones`: torchvision ResNet-18/50 (optional small-image stem), a small fast CPU encoder and a
  small ViT; `build_backbone(name, **cfg)` returns a module with `out_dim` and `preprocessing`.
- `heads`: projection / prediction heads as used by the papers (after lightly's `heads.py`).
- `augment`: batched, vectorized multi-view augmentations that run on whatever device holds
  the batch.
- `monitor`: collapse indicators (embedding std, RankMe effective rank) and a weighted kNN monitor.
- `data`: decoded training images, in memory (`ImageSet`) or read a batch at a time from the
  catalog files (`StreamedImages`, photos), the seeded epoch sampler, fixed subsets.
- `init_from`: pretrained starts (torchvision weights from the local hub cache, local
  `.pth`/`.safetensors` files, registered models) and loading them into our backbones.
- `export`: a model directory as ONNX with its preprocessing recorded.
- Training, one job per module: `config` (`TrainConfig`, `config_hash`: what a run is),
  `optim` (learning-rate schedule, weight-decay groups, optimiser), `checkpoint` (atomic
  checkpoint directories, optimiser and RNG state), `model` (`SSLModel`, gradient checkpointing,
  warm start), `views` (the micro-batch plan and the prefetching view source) and `train` (the
  loop); `entrypoint` runs it as a process (torchrun, Dagster Pipes).
- `encoder_io`: the trained-encoder directory (file names, writer, reader); `evaluate`: frozen
  features, probes, fine-tuning, promotion.
- `distributed`: the few `torch.distributed` helpers the objectives need (gradient-preserving
  all-gather for SimCLR/VICReg negatives, plain gathers for MoCo's queue and DINO's centre).
- `benchmark`: `python -m ssl_assets.ml.benchmark` measures encoder-step and augmentation
  throughput on the current machine.
"""
