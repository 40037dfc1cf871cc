#!/usr/bin/env bash
# The GPU check, in under 8 minutes on one GPU machine (run from the repository root):
#   1. installs what the machine lacks from wheels carried in .whl/ (no registry there),
#   2. covidxr-bench gpu: images/s for fp32, bf16, bf16 + channels_last, + compile; data wait
#      with 4/8/16 workers; peak memory,
#   3. 2 epochs of trainer=gpu at 224 px on the dev set, then trainer=ddp trainer.devices=1,
#   4. the gpu-marked tests.
# Output under $OUT (or ./gpu-check) : bench.txt, train.log, ddp.log, pytest.log.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check}
mkdir -p "$out"
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=offline PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
data=${COVIDXR_REAL_DATA:-data/covid-radiography-224}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -m covidxr.cli.bench gpu --root "$data" 2>&1 | tee "$out/bench.txt"
common=(data=radiography "data.root=$data" data.image_size=224 data.batch_size=128
  data.num_workers=8 trainer.max_epochs=2 callbacks.early_stopping=null)
timeout 150 python3 -m covidxr.cli.train "${common[@]}" trainer=gpu \
  hydra.run.dir="$out/train" 2>&1 | tail -40 > "$out/train.log"
timeout 150 python3 -m covidxr.cli.train "${common[@]}" trainer=ddp trainer.devices=1 \
  hydra.run.dir="$out/ddp" 2>&1 | tail -40 > "$out/ddp.log"
timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tail -20 > "$out/pytest.log"
tail -n 3 "$out"/*.log
