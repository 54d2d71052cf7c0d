#!/usr/bin/env bash
# The training benchmark on a lent GPU machine (the device tool), in one call.
#
#   benchmarks/gpu_kit.sh prepare   # here: wheels, model shape and data into .whl/ and .gpubench/ (git-ignored)
#   benchmarks/gpu_kit.sh run       # there: carry [".whl", ".gpubench"], command `bash benchmarks/gpu_kit.sh run`
#
# That machine reaches no network and runs its own Python 3.12 with CUDA torch, so `prepare` downloads,
# for Python 3.12, the packages tunesmith needs beyond what its image holds, at this .venv's versions.
# The embedded model's weights (270 MB) exceed what a call may carry (64 MiB), so `run` builds a
# random-init model of the same config: throughput does not depend on the weights, and every trainer
# starts from the same ones, so validation losses still compare.
# `run` knobs (environment): RUN_TESTS=1 (the CUDA unit tests first), CONFIGS, EXAMPLES, BATCH,
# BENCH_TIMEOUT, TEST_TIMEOUT. Results: $OUT/bench.log, $OUT/gpu_train_throughput.json, $OUT/tests.log.
set -euo pipefail
cd "$(dirname "$0")/.."

# Not in the device image (its package list: the device tool's KINDS.md), or there at another version.
PACKAGES="transformers tokenizers peft trl datasets dill multiprocess pydantic pydantic_core annotated_types
typing_inspection sqlalchemy ftfy wcwidth rouge_score nltk uvicorn defusedxml httpx2 httpcore2 truststore"

prepare() {
  for path in /.whl/ /.gpubench/; do
    grep -qxF "$path" .git/info/exclude || echo "$path" >>.git/info/exclude
  done
  mkdir -p .whl .gpubench/model .gpubench/data
  local pin
  for package in $PACKAGES; do
    pin="$package==$(.venv/bin/python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$package")"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "$pin" 2>/dev/null \
      || python3 -m pip wheel -q --no-deps -w .whl "$pin"  # a pure-Python sdist (rouge_score): build it here
  done
  local model
  model=$(.venv/bin/python -c "from tunesmith.models.loading import resolve_model; print(resolve_model('smollm2-135m-instruct'))")
  find "$model" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} .gpubench/model/ \;
  head -n 1100 ../shared/datasets/gsm8k/train.jsonl >.gpubench/data/train.jsonl
  du -sh .whl .gpubench
}

run() {
  local out=${OUT:-/tmp}
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers, peft, trl; print(torch.__version__, transformers.__version__, peft.__version__, trl.__version__)"
  python3 - <<'PY'
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

source, target = Path(".gpubench/model"), Path("/tmp/smollm2-random")
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source))
model.save_pretrained(target)
for path in source.iterdir():
    if path.name != "config.json":
        shutil.copy(path, target / path.name)
print("random-init model:", sum(p.numel() for p in model.parameters()), "parameters")
PY
  if [ -n "${RUN_TESTS:-}" ]; then
    timeout "${TEST_TIMEOUT:-120}" python3 -m pytest tests/unit/train -q -k cuda -p no:cacheprovider 2>&1 \
      | tail -25 | tee "$out/tests.log" || true
  fi
  timeout "${BENCH_TIMEOUT:-330}" python3 benchmarks/train_throughput.py --model /tmp/smollm2-random \
    --data .gpubench/data/train.jsonl --examples "${EXAMPLES:-1024}" --batch "${BATCH:-32}" \
    --configs "${CONFIGS:-trl-defaults,trl-best,tunesmith,tunesmith-fused}" \
    --json-out "$out/gpu_train_throughput.json" 2>&1 | tee "$out/bench.log"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
