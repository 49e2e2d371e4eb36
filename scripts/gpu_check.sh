#!/usr/bin/env bash
# The GPU run of docs/PERFORMANCE.md (issue #13), prepared for ONE CUDA GPU in <= 10 minutes.
#
#   scripts/gpu_check.sh [--budget SECONDS] [OUT_DIR]            run on the GPU (default OUT_DIR: benchmarks)
#   scripts/gpu_check.sh --dry-run [--budget SECONDS] [OUT_DIR]  on any machine: print every command and the
#                                                                 files it would write, check each command's
#                                                                 arguments (bench perf --dry-run), smoke-test
#                                                                 the subprocess path on the CPU; run nothing
#                                                                 on a GPU
#
# What it measures, in this order (the most important first; each group is given what is
# left of the budget, default 570 s, and a group that cannot start any more is recorded as
# skipped in the summary, never silently dropped):
#   1. every protection (bench perf --methods all) at 512² on sd15-arch, batch 1, fp32 and bf16
#      autocast (--opt none,bf16), fair and reference mode: s/step, peak CUDA memory allocated
#      -> gpu_<GPU>_perf_sd15-arch_512_b1.json
#   2. the same at batch 4 -> gpu_<GPU>_perf_sd15-arch_512_b4.json, then SDS(-) and AdvDM at
#      batch 8, 16, 32 -> gpu_<GPU>_perf_sd15-arch_512_bmax.json (the batch-max search)
#   3. real SD 1.5 weights, if cached (CLOAKBENCH_SD15, or the Hugging Face cache of
#      runwayml/stable-diffusion-v1-5 or stable-diffusion-v1-5/stable-diffusion-v1-5):
#      advdm, sds-, sdst-, mist, photoguard, batch 1, fp32 and bf16, fair and reference
#      -> gpu_<GPU>_perf_sd15_512_b1.json (or "skipped: no SD 1.5 weights cached" in the summary)
#   4. our own fastest correct SDS(-): sds- with the optimisation flags bench perf --opt
#      measures (channels-last, bf16, unet-ckpt, compile), 512², batch 4
#      -> gpu_<GPU>_opt_sds-_512.json (images/hour = 3600 / s_per_image, 100 steps)
#   5. a short bench compare on the GPU (toy model, shipped images, sds-/advdm/photoguard,
#      sdedit, psnr/ssim) -> gpu_<GPU>_compare/ (rows.csv)
#   6. the CUDA-marked tests (pytest -m cuda) -> gpu_<GPU>_logs/pytest_cuda.xml
#   and gpu_<GPU>_images_per_hour.json (scripts/images_per_hour.py: SDS(-) and AdvDM, 512², batch 1
#   and 4, fp32 and bf16; --dry-run writes it from a tiny CPU run through the same path)
#   and gpu_<GPU>_summary.json: the machine, each group's status and seconds.
# <GPU> is the device name in lower case with dashes (e.g. nvidia-h200). Each configuration
# runs in its own fresh process (bench perf's subprocess isolation on CUDA).
# Exit status: 0 when every group that ran succeeded, 1 otherwise, 2 on a usage error or
# when torch sees no CUDA device (use --dry-run on a CPU machine).
set -uo pipefail

dry_run=0
budget=570
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --budget)
      if [ $# -lt 2 ] || ! [[ "$2" =~ ^[0-9]+$ ]]; then
        echo "--budget needs a number of seconds, e.g. --budget 570" >&2
        exit 2
      fi
      budget="$2"; shift 2 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    -*) echo "unknown option $1 (use --dry-run, --budget SECONDS, OUT_DIR)" >&2; exit 2 ;;
    *)
      if [ -n "$out" ]; then
        echo "one OUT_DIR only (got $out and $1)" >&2
        exit 2
      fi
      out="$1"; shift ;;
  esac
done
cd "$(dirname "$0")/.."
out="${out:-benchmarks}"
mkdir -p "$out"

bench=".venv/bin/bench"
python=".venv/bin/python"
if [ ! -x "$bench" ]; then
  echo "no $bench: run 'make env' (scripts/setup_env.sh) first" >&2
  exit 2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [ $dry_run -eq 1 ]; then
  gpu="dry-run"
else
  if ! "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "torch sees no CUDA device: nothing to measure here (use --dry-run on a CPU machine)" >&2
    exit 2
  fi
  gpu=$("$python" -c "import re, torch; print(re.sub(r'[^a-z0-9]+', '-', torch.cuda.get_device_name(0).lower()).strip('-'))")
fi
prefix="$out/gpu_${gpu}"
logs="$prefix"_logs
mkdir -p "$logs"
start_all=$SECONDS
status=0
groups=()

left() { echo $((budget - (SECONDS - start_all))); }

# group NAME MIN_SECONDS COMMAND...: run with what is left of the budget (minus a margin for
# the rest), or record it as skipped; its console output goes to the logs folder.
group() {
  local name="$1" need="$2"
  shift 2
  local remaining
  remaining=$(left)
  if [ $dry_run -eq 1 ]; then
    echo "== $name (needs >= ${need} s of the ${budget} s budget): $*"
    groups+=("{\"group\": \"$name\", \"status\": \"dry-run\"}")
    return
  fi
  if [ "$remaining" -lt "$need" ]; then
    echo "== $name: skipped, ${remaining} s of the budget left (needs ${need} s)"
    groups+=("{\"group\": \"$name\", \"status\": \"skipped\", \"reason\": \"${remaining} s of the budget left, needs ${need} s\"}")
    return
  fi
  echo "== $name (${remaining} s left): $*"
  local start=$SECONDS
  timeout --signal=INT --kill-after=10 "$remaining" "$@" >"$logs/$name.log" 2>&1
  local rc=$?
  echo "   exit $rc after $((SECONDS - start)) s (log: $logs/$name.log)"
  tail -n 12 "$logs/$name.log"
  groups+=("{\"group\": \"$name\", \"status\": \"$([ $rc -eq 0 ] && echo ok || echo failed)\", \"exit\": $rc, \"seconds\": $((SECONDS - start))}")
  [ $rc -eq 0 ] || status=1
}

# Few steps, one repeat: a 512² SD 1.5 step is ~0.1-0.3 s on an H100-class GPU; each
# configuration pays its process start and model build (on the GPU) once.
perf=("$bench" perf --device cuda --resolution 512 --steps 2 --warmup 1 --repeats 1 --timeout 120)
[ $dry_run -eq 1 ] && perf+=(--dry-run)

group perf_sd15-arch_512_b1 60 "${perf[@]}" --arch sd15-arch --methods all --batch 1 --opt none,bf16 \
  --mode fair,reference --json "${prefix}_perf_sd15-arch_512_b1.json"
group perf_sd15-arch_512_b4 60 "${perf[@]}" --arch sd15-arch --methods all --batch 4 --opt none,bf16 \
  --mode fair,reference --json "${prefix}_perf_sd15-arch_512_b4.json"
# The largest batch worth running: SDS(-) and AdvDM up the ladder 8, 16, 32 (fair, fp32 and bf16);
# a batch that runs out of memory is recorded failed by bench perf, and images_per_hour.py takes,
# per method and precision, the batch with the most images per hour as "batch max".
group batch_max_512 60 "${perf[@]}" --arch sd15-arch --methods sds-,advdm --batch 8,16,32 --opt none,bf16 \
  --mode fair --json "${prefix}_perf_sd15-arch_512_bmax.json"

sd15="${CLOAKBENCH_SD15:-}"
if [ -z "$sd15" ]; then
  hub="${HF_HUB_CACHE:-${HF_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/huggingface}/hub}"
  for repo in models--runwayml--stable-diffusion-v1-5 models--stable-diffusion-v1-5--stable-diffusion-v1-5; do
    for snapshot in "$hub/$repo"/snapshots/*/; do
      if [ -f "$snapshot/model_index.json" ]; then sd15="${snapshot%/}"; break 2; fi
    done
  done
fi
if [ -n "$sd15" ]; then
  group perf_sd15_512_b1 60 "${perf[@]}" --arch "$sd15" --methods advdm,sds-,sdst-,mist,photoguard --batch 1 \
    --opt none,bf16 --mode fair,reference --json "${prefix}_perf_sd15_512_b1.json"
else
  echo "== perf_sd15_512_b1: skipped, no SD 1.5 weights cached (set CLOAKBENCH_SD15 to a diffusers folder)"
  groups+=("{\"group\": \"perf_sd15_512_b1\", \"status\": \"skipped\", \"reason\": \"no SD 1.5 weights cached\"}")
fi

group opt_sds-_512 60 "${perf[@]}" --arch sd15-arch --methods sds- --batch 4 --mode fair \
  --opt none,channels-last,bf16,channels-last+bf16,unet-ckpt,compile,channels-last+bf16+compile --json "${prefix}_opt_sds-_512.json"

compare=("$bench" compare --model toy --images samples --methods sds-,advdm,photoguard --attacks sdedit
         --metrics psnr,ssim --quick --device cuda --no-report --out "${prefix}_compare")
group compare 45 "${compare[@]}"
# The CUDA-marked tests (every protection on the GPU within budget, SDS(-)'s step memory below
# AdvDM's, CUDA peaks recorded); pytest exits 5 when none is collected.
group pytest_cuda 60 "$python" -m pytest -m cuda -q -p no:cacheprovider --junitxml="$logs/pytest_cuda.xml"

if [ $dry_run -eq 1 ]; then
  # Check every perf command's arguments without measuring: the same commands with --dry-run.
  for args in "--arch sd15-arch --methods all --batch 1 --opt none,bf16 --mode fair,reference" \
              "--arch sd15-arch --methods sds-,advdm --batch 8,16,32 --opt none,bf16 --mode fair" \
              "--arch sd15-arch --methods sds- --batch 4 --mode fair --opt none,channels-last,bf16,channels-last+bf16,unet-ckpt,compile,channels-last+bf16+compile"; do
    # shellcheck disable=SC2086
    if ! "${perf[@]}" $args >"$logs/dry_check.log" 2>&1; then
      echo "dry run: bench perf refused: $args" >&2
      tail -n 5 "$logs/dry_check.log" >&2
      status=1
    fi
  done
  # The CUDA runs use bench perf's subprocess isolation; exercise that path on the CPU
  # (CLOAKBENCH_GPU_CHECK_SMOKE=0 leaves it out: the fast test of this script does).
  # The images/hour table's path too: sds- and advdm, batch 1 and 2, with and without bf16
  # autocast, tiny on the CPU (the GPU run reads the 512² batch 1 / batch 4 files instead).
  if [ "${CLOAKBENCH_GPU_CHECK_SMOKE:-1}" != "0" ]; then
    if ! "$bench" perf --arch tiny-random --resolution 64 --methods sds-,advdm --batch 1,2 --opt none,bf16 \
        --mode fair,reference --steps 1 --warmup 0 --repeats 1 --threads 1 --isolation subprocess \
        --json "$logs/perf_tiny-random_smoke.json" >"$logs/perf_subprocess_smoke.log" 2>&1; then
      echo "dry run: the subprocess smoke test failed (log: $logs/perf_subprocess_smoke.log)" >&2
      status=1
    elif ! "$python" scripts/images_per_hour.py "${prefix}_images_per_hour.json" "$logs/perf_tiny-random_smoke.json"; then
      status=1
    fi
  fi
fi

# 512² images per hour of SDS(-) and AdvDM, batch 1 and batch max (searched: 4, 8, 16, 32), fp32 and bf16.
if [ $dry_run -eq 0 ]; then
  hour_inputs=()
  for name in perf_sd15-arch_512_b1 perf_sd15-arch_512_b4 perf_sd15-arch_512_bmax perf_sd15_512_b1; do
    [ -s "${prefix}_${name}.json" ] && hour_inputs+=("${prefix}_${name}.json")
  done
  if [ ${#hour_inputs[@]} -gt 0 ]; then
    "$python" scripts/images_per_hour.py "${prefix}_images_per_hour.json" "${hour_inputs[@]}" || status=1
  else
    echo "images per hour: no perf file was written" >&2
    status=1
  fi
fi

if [ $dry_run -eq 1 ]; then  # no GPU to describe; spare the torch import
  machine=$("$python" -c "import json, platform; print(json.dumps({'platform': platform.platform()}))")
else
  machine=$("$python" -c "
import json, platform, torch
info = {'torch': torch.__version__, 'cuda': torch.version.cuda, 'platform': platform.platform()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, gpu_memory_bytes=int(p.total_memory))
print(json.dumps(info))")
fi
joined=$(IFS=,; echo "${groups[*]}")
printf '{"dry_run": %s, "budget_s": %s, "seconds": %s, "machine": %s, "groups": [%s]}\n' \
  "$([ $dry_run -eq 1 ] && echo true || echo false)" "$budget" "$((SECONDS - start_all))" "$machine" "$joined" \
  >"${prefix}_summary.json"
echo "summary: ${prefix}_summary.json ($((SECONDS - start_all)) s)"
[ $dry_run -eq 1 ] && echo "dry run: nothing was measured on a GPU"
exit $status
