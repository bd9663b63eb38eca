#!/usr/bin/env bash
# The synthetic pipeline report: baseline vs TL vs TL+KD students × FP32 / INT8 × torch CPU / onnxruntime CPU.
# Takes the students trained by benchmarks/experiments/etc_synthetic.py, exports each (parity-checked), calibrates an
# onnxruntime-CPU INT8 model (accuracy gate on val), and benchmarks all of them side by side in one run.
# The bench writes report.md/report.json/PNGs into OUT; OUT/notes.md (how the report was made, observations),
# when present, is appended to report.md.
#   bash benchmarks/synthetic_pipeline.sh [RUNS] [DATA] [OUT]
set -euo pipefail
RUNS=${1:-runs/etc_synthetic}
DATA=${2:-runs/synth128}
OUT=${3:-benchmarks/reports/synthetic_pipeline}
STUDENT=${STUDENT:-espnet}
PY=${PY:-.venv/bin/python}
VS="$PY -m vsseg_edge.cli"
MODELS=()
for kind in baseline tl tl_kd; do
  dir="$RUNS/${STUDENT}_${kind}"
  [ -f "$dir/student.onnx" ] || $VS export "$dir/model.pt" --out "$dir/student.onnx" --parity-frames "$DATA"
  [ -f "$dir/student.int8.qdq.onnx" ] || $VS calibrate "$dir/student.onnx" --frames "$DATA" --target ort \
    --preset calib/ort_cpu.yaml --num-frames 64 --out "$dir/student.int8.qdq.onnx" --keep-failed
  MODELS+=("$dir/model.pt" "$dir/student.onnx" "$dir/student.int8.qdq.onnx")
done
$VS bench "${MODELS[@]}" --dataset "$DATA" --backends ort,torch --runs 30 --warmup 5 --frames 8 --out "$OUT"
if [ -f "$OUT/notes.md" ]; then printf '\n' >> "$OUT/report.md"; cat "$OUT/notes.md" >> "$OUT/report.md"; fi
