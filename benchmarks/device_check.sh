#!/usr/bin/env bash
# One-command accelerator check: parity tests at precision "highest", then inversion and
# training-step throughput for float32 and bfloat16 at batch 8 and 32 (1024 generator, official
# widths), compile times, XLA's memory estimate and peak device memory.
#
#   bash benchmarks/device_check.sh                 # on whatever accelerator JAX finds
#   bash benchmarks/device_check.sh --smoke         # tiny sizes (train step at batch 2
#                                                   # only), about 2 min on a 2-core CPU
#   bash benchmarks/device_check.sh --out DIR       # where the reports go (default: a new
#                                                   # device_check_<date> folder)
#
# Writes DIR/device_report.md and DIR/device_report.json (plus one JSON per measurement). Each
# measurement runs under its own time limit (DEVICE_CHECK_TIMEOUT seconds, default 150) so the
# whole check stays under 10 minutes on one GPU; a measurement that fails or runs out of memory
# is reported as such and the check goes on. Exit status: 0 when the parity tests passed and
# every measurement produced a number, 1 otherwise.
set -u
cd "$(dirname "$0")/.."
SMOKE=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --out) OUT="$2"; shift ;;
    *) echo "device_check.sh: unknown argument '$1' (use --smoke, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$OUT" ]; then
  OUT="device_check_$(date +%Y%m%d_%H%M%S)"
fi
if [ -e "$OUT/device_report.json" ]; then
  echo "device_check.sh: $OUT already holds a report; pass another --out" >&2; exit 2
fi
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
LIMIT="${DEVICE_CHECK_TIMEOUT:-150}"

if [ "$SMOKE" = 1 ]; then
  BATCHES="2 4"
  TRAIN_BATCHES="2"  # each train-step run compiles the whole step (~30 s on a CPU): one is enough
  SIZE=(--resolution 64 --max-channels 32 --encoder-widths 8 16 16 32)
  PARITY=(tests/parity/test_discriminator.py)
else
  BATCHES="8 32"
  TRAIN_BATCHES="$BATCHES"
  SIZE=(--resolution 1024)
  PARITY=(tests/parity/test_generator.py tests/parity/test_stylegan2_ada.py
          tests/parity/test_encoders.py tests/parity/test_lpips.py tests/parity/test_arcface.py
          tests/parity/test_moco.py tests/parity/test_fid_inception.py
          tests/parity/test_discriminator.py tests/parity/test_stylegan3.py
          tests/parity/test_restyle.py)
fi

echo "== parity tests at precision highest: ${PARITY[*]}"
t0=$(date +%s)
JAX_DEFAULT_MATMUL_PRECISION=highest timeout $((LIMIT * 2)) "$PY" -m pytest -q -x \
  -p no:cacheprovider -m "not slow" "${PARITY[@]}" > "$OUT/parity.log" 2>&1
echo "$? $(( $(date +%s) - t0 ))" > "$OUT/parity.status"
tail -n 3 "$OUT/parity.log"

for dtype in float32 bfloat16; do
  echo "== invert, $dtype, batches $BATCHES"
  timeout "$LIMIT" "$PY" benchmarks/encode.py --cases invert --batches $BATCHES \
    --repeats 2 --repeats-large 2 --dtype "$dtype" "${SIZE[@]}" \
    --json "$OUT/invert_$dtype.json" > "$OUT/invert_$dtype.log" 2>&1 \
    || echo "invert $dtype failed (see $OUT/invert_$dtype.log)"
  for b in $TRAIN_BATCHES; do
    echo "== train step, $dtype, batch $b"
    timeout "$LIMIT" "$PY" benchmarks/train_step.py --batch "$b" --steps 2 --dtype "$dtype" \
      --remat none "${SIZE[@]}" --json "$OUT/train_${dtype}_$b.json" \
      > "$OUT/train_${dtype}_$b.log" 2>&1 \
      || echo "train step $dtype batch $b failed (see $OUT/train_${dtype}_$b.log)"
  done
done

"$PY" benchmarks/device_report.py "$OUT" --smoke "$SMOKE" --batches $TRAIN_BATCHES
