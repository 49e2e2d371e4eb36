#!/usr/bin/env bash
# The GPU checks of PERFORMANCE.md, as one prepared script for one H100-class GPU.
#
#   scripts/gpu_check.sh OUT_DIR            run everything (about 4-6 minutes on one H100)
#   scripts/gpu_check.sh --dry-run OUT_DIR  on any machine: list what would run, collect the
#                                           CUDA tests, smoke-test the subprocess path on the
#                                           CPU with tiny-random; run nothing on a GPU
#
# Writes into OUT_DIR:
#   perf_sd15-arch_512_fair_reference.json  advdm, sds+, sds-, mist, photoguard at 512², batch 1,
#                                           fair and reference mode, fp32 (the paper's comparison)
#   perf_sd15-arch_512_sds-_batch.json      sds- (and advdm, the denominator) at 512², batch 8:
#                                           fp32, bf16 autocast, VAE checkpointing — the "2 s
#                                           per image" target and the GPU memory options
#   pytest_cuda.xml / pytest_cuda.log       the CUDA-marked tests (pytest -m cuda)
#   machine.txt                             nvidia-smi, torch and CUDA versions
#   *.log                                   each command's console output
# Each configuration runs in its own fresh process (bench perf's subprocess isolation on CUDA).
# Exit status: non-zero if any step failed; later steps still run, so one failure does not
# hide the others.
set -uo pipefail

dry_run=0
if [ "${1:-}" = "--dry-run" ]; then
  dry_run=1
  shift
fi
if [ $# -ne 1 ]; then
  echo "usage: $0 [--dry-run] OUT_DIR" >&2
  exit 2
fi
out="$1"
mkdir -p "$out"
cd "$(dirname "$0")/.."

bench=".venv/bin/bench"
python=".venv/bin/python"
if [ ! -x "$bench" ]; then
  echo "no $bench: run 'make env' (scripts/setup_env.sh) first" >&2
  exit 2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

status=0
run() {  # run NAME COMMAND...: log to OUT_DIR/NAME.log, remember a failure, go on
  local name="$1"
  shift
  echo "== $name: $*"
  local start=$SECONDS
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "   exit $rc after $((SECONDS - start)) s (log: $out/$name.log)"
  tail -n 25 "$out/$name.log"
  [ $rc -eq 0 ] || status=1
}

# Few steps, one repeat: the step of a 512² SD 1.5 attack is ~0.1-0.3 s on an H100, and
# each configuration pays its process start and model build (built on the GPU) once.
common=(--arch sd15-arch --resolution 512 --device cuda --dtype float32 --steps 3 --warmup 2 --repeats 1
        --timeout 240)
fair_reference=(--methods advdm,sds+,sds-,mist,photoguard --mode fair,reference --batch 1
                --json "$out/perf_sd15-arch_512_fair_reference.json")
batched=(--methods sds- --mode fair --batch 8 --opt none,bf16,vae-ckpt --json "$out/perf_sd15-arch_512_sds-_batch.json")

if [ $dry_run -eq 1 ]; then
  run perf_fair_reference_dry "$bench" perf "${common[@]}" "${fair_reference[@]}" --dry-run
  run perf_batch_dry "$bench" perf "${common[@]}" "${batched[@]}" --dry-run
  # The CUDA runs use bench perf's subprocess isolation; exercise that path on the CPU.
  run perf_subprocess_smoke "$bench" perf --arch tiny-random --methods sds- --mode fair,reference --steps 1 \
    --warmup 1 --repeats 1 --isolation subprocess --json "$out/perf_tiny-random_smoke.json"
  echo "== pytest_cuda_collect: pytest -m cuda --collect-only"
  "$python" -m pytest -m cuda --collect-only -q -p no:cacheprovider >"$out/pytest_cuda_collect.log" 2>&1
  rc=$?
  tail -n 15 "$out/pytest_cuda_collect.log"
  [ $rc -eq 0 ] || [ $rc -eq 5 ] || status=1  # 5: no test is marked cuda yet
  echo "dry run: nothing was measured; JSON would be written to $out"
  exit $status
fi

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NONE')"
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"
if ! "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "torch sees no CUDA device: nothing to check here (use --dry-run on a CPU machine)" >&2
  exit 2
fi

run perf_fair_reference "$bench" perf "${common[@]}" "${fair_reference[@]}"
run perf_batch "$bench" perf "${common[@]}" "${batched[@]}"
echo "== pytest_cuda: pytest -m cuda"
start=$SECONDS
"$python" -m pytest -m cuda -q --junitxml="$out/pytest_cuda.xml" -p no:cacheprovider >"$out/pytest_cuda.log" 2>&1
rc=$?
echo "   exit $rc after $((SECONDS - start)) s (log: $out/pytest_cuda.log)"
tail -n 25 "$out/pytest_cuda.log"
# pytest exits 5 when no test is marked cuda: nothing failed on the GPU.
[ $rc -eq 0 ] || [ $rc -eq 5 ] || status=1
echo "done in $SECONDS s; results in $out"
exit $status
