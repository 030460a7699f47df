#!/usr/bin/env bash
# The CUDA checks in one command, for a machine with an NVIDIA GPU and PyTorch on it.
#
#   benchmarks/gpu_check.sh DATA_ROOT OUT [RUNS]
#
# DATA_ROOT holds cifar-10-batches-bin/ (and peppers.png for the prediction and attack tests);
# OUT receives five small files: env.txt, tests.txt, train.txt, results.json, summary.txt.
# RUNS (default /tmp/cnnlab-gpu-runs) receives the run folders.
#   1. the gpu-marked tests (tests/test_cuda.py: CUDA against the CPU);
#   2. `improved` with its default recipe, timed: the issue's "94 % in seconds on a GPU";
#   3. `hw-mish-bn` with its default recipe, seeds 0 and 1 (the ≥ 85 % target);
#   4. `hw-mish` with its default recipe, seed 0 (the ≥ 80 % target).
# cnnlab runs from this checkout (PYTHONPATH=src), on the machine's own torch, torchvision, rich,
# matplotlib and scikit-learn: nothing is installed. Each train step is skipped if its run
# folder already holds a finished run, so a second call after a time-out goes on where it stopped.
# Dry run on a machine without a GPU (checks the script, trains a few steps):
#   CNNLAB_TEST_DEVICE=cpu TRAIN_EXTRA="--epochs 1 --limit-train 512 --limit-test 256" \
#     benchmarks/gpu_check.sh ../shared/data /tmp/gpu-dry /tmp/gpu-dry-runs
set -euo pipefail
data=${1:?usage: benchmarks/gpu_check.sh DATA_ROOT OUT [RUNS]}
out=${2:?usage: benchmarks/gpu_check.sh DATA_ROOT OUT [RUNS]}
runs=${3:-/tmp/cnnlab-gpu-runs}
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 CNNLAB_NO_PROGRESS=1
export CNNLAB_SHARED_DATA="$data"
python=${PYTHON:-python3}
device=${CNNLAB_TEST_DEVICE:-cuda}
read -r -a extra <<< "${TRAIN_EXTRA:-}"
mkdir -p "$out" "$runs"
cd "$here"

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$python" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__,
"cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")'; } \
  2>&1 | tee "$out/env.txt"

"$python" -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda.py 2>&1 | tee "$out/tests.txt" || true

for spec in improved:0 hw-mish-bn:0 hw-mish-bn:1 hw-mish:0; do
  model=${spec%:*} seed=${spec#*:}
  echo "== cnnlab train --model $model --seed $seed --device $device ${extra[*]}" | tee -a "$out/train.txt"
  { "$python" -m cnnlab train --model "$model" --seed "$seed" --device "$device" --data-root "$data" \
      --out "$runs/$model-s$seed" "${extra[@]}" 2>&1 || echo "FAILED: exit $?"; } | tail -4 | tee -a "$out/train.txt"
done

"$python" - "$runs" "$out/results.json" <<'EOF' | tee "$out/summary.txt"
import json, sys
from pathlib import Path
runs, rows = Path(sys.argv[1]), {}
for result in sorted(runs.glob("*/result.json")):
    r = json.loads(result.read_text())
    # training time to the first epoch whose plain test accuracy reached 94 % (None if none did;
    # the final TTA number, measured after the last epoch, may reach it when no epoch did)
    elapsed, first94 = 0.0, None
    for h in r["history"]:
        elapsed += h["seconds"]
        if first94 is None and h["test_accuracy"] >= 0.94:
            first94 = elapsed
    rows[result.parent.name] = dict(test_accuracy=r["test_accuracy"], plain=r["test_accuracy_plain"],
                                    epochs=r["epochs"], train_seconds=r["train_seconds"],
                                    wall_seconds=r["wall_seconds"], plain_94_after_seconds=first94,
                                    precise_bn=r.get("precise_bn"), precision=r["precision"])
    print(f"{result.parent.name:16s} {r['test_accuracy']:.2%} (plain {r['test_accuracy_plain']:.2%}) "
          f"{r['epochs']} epochs, {r['train_seconds']:.1f} s training, {r['wall_seconds']:.1f} s wall")
Path(sys.argv[2]).write_text(json.dumps(rows, indent=1))
EOF
