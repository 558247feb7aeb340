#!/usr/bin/env bash
# The one prepared run for a lent GPU (the device tool's `run`, from the repository root):
# ours and PyTorch (AMP bfloat16 and float32, channels_last) training and inference on the
# GPU in one run, MFU against the card's published peak, the device peak memory of each.
# The card's image has JAX, Flax, Optax and PyTorch; the rest travels as wheels in .whl
# (benchmarks/README.md, "GPU"). Results land in $OUT.
set -euo pipefail
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__)" \
  | tee -a "$OUT/gpu.txt"
python3 benchmarks/throughput.py --batch="${BATCH:-256}" --dtypes=bfloat16,float32 \
  --repeats="${REPEATS:-10}" --warmup=3 --rounds=1 \
  --output="$OUT/gpu.json" --markdown="$OUT/gpu.md" 2>&1 | tee "$OUT/gpu.log"
