#!/usr/bin/env bash
# The GPU checks in one short run, for a machine with a CUDA device (CI has none):
#   bash scripts/gpu_checks.sh [OUT_DIR]        (default OUT_DIR: gpu_checks/; PYTHON=... to choose the interpreter)
# 1. tests/test_gpu.py: every architecture, the fast paths, the face pipeline, `hf-fer predict`, sharded prediction
#    and training on the GPU, each against the CPU's results;
# 2. benchmarks: images/s per architecture (eager, channels-last, bf16 at batch 1/32/256), the face pipeline,
#    training images/s (fp32 and bf16 autocast), then bf16 + torch.compile (CUDA graphs) at batch 256, one
#    architecture at a time, for as long as the step's time allows.
# Each step has its own time limit, so a slow step costs only its own figures; everything goes to OUT_DIR/gpu_checks.log
# (and the benchmarks' JSON files). Runs from the repository root, with hf_fer from src/ (no install needed).
set -u
cd "$(dirname "$0")/.."
out=${1:-gpu_checks}
mkdir -p "$out"
log="$out/gpu_checks.log"
py=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
started=$SECONDS

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s, at $((SECONDS - started))s)" | tee -a "$log"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  echo "=== $name: exit $? after $((SECONDS - started))s" | tee -a "$log"
}

step environment 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; nproc; \
  $py -c 'import sys, torch, torchvision, transformers, accelerate; print(sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda, \
\"torchvision\", torchvision.__version__, \"transformers\", transformers.__version__, \"accelerate\", accelerate.__version__, torch.cuda.get_device_name())'"
step tests "${GPU_TESTS_LIMIT:-170}" "$py" -m pytest -p no:xdist -p no:cacheprovider -q -rs -s --timeout 150 tests/test_gpu.py
step benchmark "${GPU_BENCH_LIMIT:-90}" "$py" scripts/benchmark.py --devices cuda --batch-sizes 1 32 256 --modes eager channels_last bf16 \
  --iterations 10 --min-seconds 0.2 --json "$out/benchmark_gpu.json"
step pipeline "${GPU_PIPELINE_LIMIT:-45}" "$py" scripts/benchmark.py --pipeline --devices cuda --iterations 3 --threads 8 --json "$out/pipeline_gpu.json"
step training "${GPU_TRAIN_LIMIT:-45}" "$py" scripts/benchmark.py --train --devices cuda --batch-sizes 64 --modes eager bf16 \
  --iterations 5 --json "$out/training_gpu.json"
step compile "${GPU_COMPILE_LIMIT:-60}" bash -c "for arch in mini_xception arm dacl dmue vt_nr poster_v2; do \
  $py scripts/benchmark.py --devices cuda --arch \$arch --batch-sizes 256 --modes eager bf16 bf16_compile --iterations 10 --min-seconds 0.2; done"
echo "=== done after $((SECONDS - started))s" | tee -a "$log"
