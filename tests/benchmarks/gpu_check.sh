#!/usr/bin/env bash
# The prepared GPU check: everything textrl's GPU path needs proven, in one run of at most 10 minutes
# on a machine with one CUDA GPU, no network, and only torch, transformers, peft, pluggy, pytest and
# matplotlib installed.
#
# Usage (from anywhere; it runs in the repository root):
#   tests/benchmarks/gpu_check.sh                  # the GPU check (device=cuda, bf16)
#   tests/benchmarks/gpu_check.sh --smoke          # the same stages on the CPU at tiny settings (CI, ~1 min)
#   tests/benchmarks/gpu_check.sh --prepare-wheels # on a machine WITH network: fill .gpu_wheels/
#
# Stages (each under its own time limit, so the whole check ends within 10 minutes; a stage that
# fails or runs out of time is recorded and the next one runs):
#   1. tests/integration/test_gpu.py (device=auto is CUDA, tensors stay on the GPU, compiled = eager in float32
#      and bf16, host syncs per token step, bf16 and LoRA training through the CLI)      <= 180 s
#   2. tests/benchmarks/rollout.py: kernel launches per token step and the bf16 table at a reduced set
#      of shapes (SmolLM2-135M's shape, batch 16 and 128, 64 new tokens)                 <= 170 s
#   3. textrl experiment=tinystories_sentiment device=cuda trainer.precision=bf16 (30 updates)  <= 85 s
#   4. textrl experiment=instructgpt_tiny device=cuda trainer.precision=bf16                    <= 85 s
#   5. the sharded path on one GPU, one process (NCCL): tinystories, trainer.sharding=fsdp, bf16, 4 updates
#      gathering the whole policy per rollout with a sharded checkpoint every 2, then resumed to 6 updates
#      gathering layer by layer (lockstep decoding), and the consolidated policy/ loaded by transformers <= 60 s
#
# Output: one folder, $OUT when set, else gpu_check_out/<UTC time>/ in the repository (ignored by git):
#   env.txt (GPU, versions), <stage>.log per stage, the runs' directories (metrics.jsonl, report.png,
#   summary.json ...), figures/ (every .png of the runs, copied), stages.tsv (stage, exit code,
#   seconds). The script's exit code is 0 when every stage passed.
#
# Assets: the TinyStories model and prompts are read from $TEXTRL_ASSETS if set, else from
# ../shared/assets beside the repository, else from the repository's ignored .assets/ folder. To
# bring them to a machine without ../shared:
#   mkdir -p .assets && cp -r /work/shared/assets/tinystories-656k /work/shared/assets/tinystories-text .assets/
#
# Python packages: textrl's remaining dependencies travel as wheels in the ignored .gpu_wheels/
# folder. Fill it on a machine with network and the GPU machine's Python version
# (`gpu_check.sh --prepare-wheels`, about 10 MB: gymnasium, hydra-core + omegaconf + antlr4,
# accelerate, gguf, vadersentiment, hypothesis and their small dependencies, setuptools; wandb
# is left out, the check logs to the console). The check installs them, and textrl itself
# (editable, no dependencies), when `import textrl` fails:
#   pip install --no-index --find-links .gpu_wheels gymnasium hydra-core accelerate gguf vadersentiment hypothesis
#   pip install --no-index --find-links .gpu_wheels --no-deps -e .
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO" || exit 1
PY="${PYTHON:-python}"
WHEELS="$REPO/.gpu_wheels"
PACKAGES=(gymnasium cloudpickle farama-notifications "hydra-core>=1.3,<1.4" omegaconf antlr4-python3-runtime
          accelerate psutil gguf vadersentiment requests urllib3 idna certifi charset-normalizer hypothesis
          sortedcontainers attrs packaging "setuptools>=68" wheel)  # setuptools>=68: pyproject's build-system

mode=gpu
case "${1:-}" in
  --smoke) mode=smoke ;;
  --prepare-wheels) mode=wheels ;;
  "") ;;
  *) echo "usage: $0 [--smoke | --prepare-wheels]" >&2; exit 2 ;;
esac

if [[ $mode == wheels ]]; then
  mkdir -p "$WHEELS"
  # pins: the versions installed here (what CI ran) when present; the build tools at pyproject's bounds
  mapfile -t pinned < <("$PY" - "${PACKAGES[@]}" <<'EOF'
import importlib.metadata as md, re, sys
for spec in sys.argv[1:]:
    name = re.split(r"[<>=]", spec)[0]
    if name in ("setuptools", "wheel"):
        print(spec)
        continue
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(spec)
EOF
)
  "$PY" -m pip download --no-deps --dest "$WHEELS" "${pinned[@]}" || exit 1
  echo "wheels in $WHEELS:"; ls "$WHEELS"
  exit 0
fi

if [[ $mode == gpu ]]; then
  export TEXTRL_PRECISION=bf16 TEXTRL_DEVICE=cuda
else
  export TEXTRL_PRECISION=bf16 TEXTRL_DEVICE=cpu
fi
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

out="${OUT:-$REPO/gpu_check_out/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out/figures" || exit 1
out="$(cd "$out" && pwd)"
echo -e "stage\texit_code\tseconds" > "$out/stages.tsv"

if [[ -z "${TEXTRL_ASSETS:-}" ]]; then
  for candidate in "$REPO/../shared/assets" "$REPO/.assets"; do
    if [[ -f "$candidate/tinystories-656k/config.json" ]]; then
      TEXTRL_ASSETS="$(cd "$candidate" && pwd)"; break
    fi
  done
fi
if [[ ! -f "${TEXTRL_ASSETS:-/nonexistent}/tinystories-656k/config.json" ]]; then
  echo "gpu_check: error: TinyStories assets not found in \$TEXTRL_ASSETS, ../shared/assets or .assets/;" \
       "copy tinystories-656k and tinystories-text into $REPO/.assets/" | tee "$out/error.txt" >&2
  exit 1
fi
export TEXTRL_ASSETS

if ! "$PY" -c "import textrl, hydra, gymnasium" 2>/dev/null; then
  if [[ -d "$WHEELS" ]]; then
    echo "installing textrl's dependencies from $WHEELS" | tee "$out/install.log"
    "$PY" -m pip install --no-index --find-links "$WHEELS" gymnasium "hydra-core>=1.3,<1.4" accelerate gguf \
      vadersentiment hypothesis >> "$out/install.log" 2>&1
    "$PY" -m pip install --no-index --find-links "$WHEELS" --no-deps -e . >> "$out/install.log" 2>&1
  fi
  "$PY" -c "import textrl, hydra, gymnasium" || { echo "gpu_check: error: textrl is not importable" \
    "(see $out/install.log; fill .gpu_wheels/ with --prepare-wheels)" >&2; exit 1; }
fi

{
  date -u
  echo "mode=$mode repo=$REPO assets=$TEXTRL_ASSETS"
  git -C "$REPO" log -1 --oneline 2>/dev/null
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import sys, torch, transformers, peft; print(sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'peft', peft.__version__,
'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

failed=0
stage() {  # stage NAME SECONDS COMMAND... : run under a time limit, log to $out/NAME.log, record the result
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "== $name (at most ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo -e "$name\t$rc\t$((SECONDS - start))" >> "$out/stages.tsv"
  if [[ $rc -ne 0 ]]; then
    failed=1
    echo "   FAILED (exit $rc$([[ $rc -eq 124 ]] && echo ', out of time')); last lines of $name.log:"
    tail -n 15 "$out/$name.log" | sed 's/^/   | /'
  else
    echo "   ok ($((SECONDS - start)) s)"
  fi
}

TEXTRL=("$PY" -m textrl trainer.progress_bar=false "device=$TEXTRL_DEVICE" "trainer.precision=$TEXTRL_PRECISION")

# stage 5: bash -c "$SHARDED" _ DIR UPDATES RESUMED_UPDATES TEXTRL-COMMAND...: a sharded run with checkpoints, resumed
# gathering layer by layer, then its consolidated policy/ loaded by transformers alone (TEXTRL-COMMAND's first word is python)
SHARDED='dir=$1 first=$2 total=$3; shift 3
"$@" "hydra.run.dir=$dir" "trainer.updates=$first" "trainer.checkpoint_every=$(( first > 1 ? first / 2 : 1 ))" &&
"$@" "hydra.run.dir=$dir" "trainer.updates=$total" trainer.resume=auto trainer.rollout_gather=per_layer &&
"$1" -c "import sys, json; from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained(sys.argv[1] + \"/policy\"); s = json.load(open(sys.argv[1] + \"/summary.json\"))
print(\"sharded_ok updates\", s[\"updates\"], \"stored_bytes\", s[\"stored_bytes\"], \"params\", m.num_parameters())" "$dir"'

if [[ $mode == gpu ]]; then
  stage 1_test_gpu 180 "$PY" -m pytest tests/integration/test_gpu.py -rA -s -p no:cacheprovider
  stage 2_rollout_table 170 "$PY" tests/benchmarks/rollout.py --device cuda --skip-throughput --gpu-table \
    --repeats 2 --table-shapes smollm2-135m --table-batch-sizes 16 128 --table-new-tokens 64
  stage 3_tinystories_bf16 85 "${TEXTRL[@]}" "hydra.run.dir=$out/tinystories_bf16" experiment=tinystories_sentiment trainer.updates=30
  stage 4_instructgpt_tiny_bf16 85 "${TEXTRL[@]}" "hydra.run.dir=$out/instructgpt_tiny_bf16" experiment=instructgpt_tiny
  stage 5_sharded_bf16 60 bash -c "$SHARDED" _ "$out/sharded_bf16" 4 6 "${TEXTRL[@]}" experiment=tinystories_sentiment \
    trainer.sharding=fsdp
else  # the same stages on the CPU, tiny
  stage 1_test_gpu 60 "$PY" -m pytest tests/integration/test_gpu.py -rA -p no:cacheprovider  # skips without CUDA
  stage 2_rollout_table 120 "$PY" tests/benchmarks/rollout.py --smoke --skip-ops
  stage 3_tinystories_bf16 120 "${TEXTRL[@]}" "hydra.run.dir=$out/tinystories_bf16" experiment=tinystories_sentiment \
    trainer.updates=2 rollout.batch_size=4 algo.minibatch_size=4 algo.epochs=1 env.max_new_tokens=4
  stage 4_instructgpt_tiny_bf16 120 "${TEXTRL[@]}" "hydra.run.dir=$out/instructgpt_tiny_bf16" experiment=instructgpt_tiny \
    sft.max_examples=16 rm.max_examples=16 rm.max_eval_examples=8 trainer.updates=1 rollout.batch_size=4 algo.minibatch_size=4 \
    env.max_new_tokens=4 eval.num_prompts=4 data.max_prompts=24 data.eval_prompts=4
  stage 5_sharded_bf16 60 bash -c "$SHARDED" _ "$out/sharded_bf16" 1 2 "${TEXTRL[@]}" experiment=tinystories_sentiment \
    trainer.sharding=fsdp rollout.batch_size=4 algo.minibatch_size=4 algo.epochs=1 env.max_new_tokens=4
fi

find "$out" -path "$out/figures" -prune -o -name '*.png' -print | while read -r png; do
  rel="${png#"$out"/}"; cp "$png" "$out/figures/${rel//\//__}"
done
echo "figures: $(ls "$out/figures" | wc -l) in $out/figures"
column -t "$out/stages.tsv" 2>/dev/null || cat "$out/stages.tsv"
echo "output: $out"
exit $failed
