#!/usr/bin/env bash
# GPU check, at most 8 minutes on one GPU (each step has its own time limit):
#   1. the CUDA-marked tests (pytest -m cuda);
#   2. a 224 px throughput run: ResNet-50, bf16, channels_last, batch 256, our training loop
#      against the bare model step, images/s and peak GPU memory (benchmarks/photo_224.py);
#   3. when 2 GPUs exist, a 2-process NCCL torchrun of the training entry point, checking that
#      both ranks end with identical weights;
# then one summary. Without a GPU it says so and exits 0 (a dry run on CPU).
#
#   bash benchmarks/gpu_check.sh                 # uses .venv/bin/python, else python3
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh
set -u -o pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT="${GPU_CHECK_OUT:-benchmarks/out/gpu_check}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
started=$(date +%s)
summary=()

gpus=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null || echo 0)
if [ "$gpus" -eq 0 ]; then
  smi=$(nvidia-smi -L 2>/dev/null | head -3 || true)
  echo "gpu_check: no CUDA GPU visible to torch (${smi:-nvidia-smi: none}); nothing to check."
  echo "== gpu_check summary =="
  echo "GPU: none on this machine: CUDA tests, throughput and NCCL checks skipped"
  exit 0
fi
name=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))")
echo "gpu_check: $gpus GPU(s), $name"

# 1. CUDA-marked tests (2.5 min)
if timeout 150 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests > "$OUT/tests.log" 2>&1; then
  summary+=("cuda tests: $(tail -1 "$OUT/tests.log")")
else
  summary+=("cuda tests: FAILED or timed out ($(tail -1 "$OUT/tests.log")); see $OUT/tests.log")
fi

# 2. 224 px throughput, ResNet-50 bf16 channels_last batch 256 (4 min)
if timeout 240 "$PY" benchmarks/photo_224.py --section throughput --device cuda \
    --backbone resnet50 --batch 256 --precision bf16 --channels-last --threads 0 \
    --images 1024 --steps 8 --rounds 3 --json "$OUT/throughput.json" > "$OUT/throughput.log" 2>&1; then
  summary+=("$("$PY" - "$OUT/throughput.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))["throughput"]
m, mem = r["median_images_per_s"], r.get("peak_gpu_memory_gib", {})
print(
    f"throughput ResNet-50 bf16 channels_last batch 256 @224: ours {m['ours']} img/s, "
    f"bare {m['bare_step']} img/s, ours/bare {r['ours_over_bare_step']} (goal >= 0.95), "
    f"augmentation {m['augmentation_only']} img/s; peak GPU memory GiB ours "
    f"{mem.get('ours')} bare {mem.get('bare_step')}"
)
PYEOF
)")
else
  summary+=("throughput: FAILED or timed out; see $OUT/throughput.log")
fi

# 3. 2-process NCCL torchrun (1 min), only with 2 GPUs
if [ "$gpus" -ge 2 ]; then
  job=$("$PY" - "$OUT" <<'PYEOF'
import sys
from pathlib import Path
import numpy as np
from ssl_assets.ml.config import TrainConfig
from ssl_assets.ml.entrypoint import TrainJob
out = Path(sys.argv[1]) / "ddp"
out.mkdir(parents=True, exist_ok=True)
np.save(out / "catalog.npy", np.random.default_rng(0).integers(0, 256, (256, 64, 64, 3), np.uint8))
cfg = TrainConfig(backbone="resnet18", backbone_kwargs={"norm": "group", "input_size": 64},
                  objective={"hidden_dim": 64, "out_dim": 32, "head_batch_norm": False},
                  batch_size=64, max_steps=4, device="cuda", checkpoint_every=0)
job = TrainJob(config=cfg, train=[[str(out / "catalog.npy"), None]],
               checkpoint_dir=str(out / "ckpt"), output_dir=str(out / "encoder"),
               result_dir=str(out / "results"))
print(job.write(out / "job.json"))
PYEOF
)
  torchrun=$(dirname "$PY")/torchrun
  [ -x "$torchrun" ] || torchrun=torchrun
  if timeout 120 "$torchrun" --standalone --nproc_per_node=2 --max-restarts=0 \
      -m ssl_assets.ml.entrypoint --job "$job" > "$OUT/ddp.log" 2>&1; then
    summary+=("$("$PY" - "$OUT/ddp/results" <<'PYEOF'
import json, sys
from pathlib import Path
ranks = [json.loads(p.read_text()) for p in sorted(Path(sys.argv[1]).glob("result_rank*.json"))]
same = len({r["model_sha256"] for r in ranks}) == 1
print(f"NCCL torchrun: {len(ranks)} ranks, {ranks[0]['step']} steps, identical weights: {same}")
PYEOF
)")
  else
    summary+=("NCCL torchrun: FAILED or timed out; see $OUT/ddp.log")
  fi
else
  summary+=("NCCL torchrun: skipped (1 GPU)")
fi

echo "== gpu_check summary ($name x $gpus, $(( $(date +%s) - started )) s) =="
printf '%s\n' "${summary[@]}"
