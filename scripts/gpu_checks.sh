#!/bin/bash
# The checks that need a CUDA machine (CI has none), in one run of a few minutes:
#   scripts/gpu_checks.sh AUTHORS_CHECKOUT [LOG_DIR]
# 1. ours against the authors' code (lll143653/amsnet, checked out at AUTHORS_CHECKOUT) on the GPU: the AMSNet-B
#    training step in float32 and under bf16 autocast, and inference; each writes its docs/results.md section;
# 2. the demo trained on CUDA with train.amp false, bf16 and fp16 (each must finish and report a PSNR);
# 3. the test suite, where device 'auto' means CUDA (over the cores where pytest-xdist is installed).
# The tests read ../shared, or AMCFD_SHARED. Every check runs; the exit code is 1 when any failed.
set -euo pipefail
failed=0
authors=${1:?usage: scripts/gpu_checks.sh AUTHORS_CHECKOUT [LOG_DIR]}
logs=${2:-results/gpu_checks}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
$python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to check')" || exit 2
start=$(date +%s)
step() { echo "=== [$(( $(date +%s) - start )) s] $*"; }
check() {    # check [--log FILE] COMMAND...: run it, note a failure, go on
  local status=0
  if [ "$1" = --log ]; then local log=$2; shift 2; "$@" > "$log" 2>&1 || status=$?; else "$@" 2>&1 || status=$?; fi
  if [ "$status" != 0 ]; then echo "FAILED (exit $status): $*"; failed=1; fi
}

step "training step side by side, float32 and bf16"
for amp in "" "--amp bf16"; do
  check timeout 200 $python scripts/bench_authors_speed.py --authors-code "$authors" --train --device cuda \
    --reps 5 --timed-steps 10 $amp --write-docs
done
step "inference side by side"
check timeout 120 $python scripts/bench_authors_speed.py --authors-code "$authors" --device cuda --reps 10 \
  --reps-e 10 --write-docs

step "demo training on CUDA (600 steps) with each train.amp"
for amp in false bf16 fp16; do
  check --log "$logs/amp_$amp.log" timeout 120 $python train.py -opt options/train/demo.yml --set \
    name=gpu_checks_amp_$amp device=cuda train.amp=$amp train.total_iter=600 val.val_freq=600 \
    logger.print_freq=200 logger.save_checkpoint_freq=600
  echo "train.amp=$amp done"; grep -A4 "validation at" "$logs/amp_$amp.log" | tail -5 || true
done

step "tests"
workers=$($python -c "import xdist" 2>/dev/null && echo "-n $(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))" || true)
check --log "$logs/pytest.log" timeout 300 $python -m pytest -q $workers -p no:cacheprovider --maxfail=15 --tb=short
tail -25 "$logs/pytest.log"
step "done"
exit "$failed"
