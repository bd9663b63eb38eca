#!/usr/bin/env bash
# GPU / TensorRT check: run on a machine with an NVIDIA GPU (and TensorRT, where installable), from the repo root.
#   bash benchmarks/gpu_check.sh [OUT]            (OUT defaults to runs/gpu_check)
# 1. reuses runs/demo (or makes a short one) for a synthetic-trained student, its FP32 ONNX and synthetic data;
# 2. makes a TensorRT-flavour Q/DQ INT8 ONNX;
# 3. with TensorRT: builds FP16 and INT8 engines (timing cache), refuses nothing silently;
# 4. benchmarks torch (CUDA), onnxruntime (CUDA/TensorRT providers when installed) and the engines side by side:
#    latency p50/p99, FPS, mIoU, TC, INT8/FP16 argmax agreement with the FP32 reference.
# Everything it prints names the card (vsseg-edge doctor + the bench report's environment).
set -euo pipefail
OUT=${1:-runs/gpu_check}
PY=${PY:-python3}
VS="$PY -m vsseg_edge.cli"
DEMO=${DEMO:-runs/demo}
mkdir -p "$OUT"
$VS doctor | tee "$OUT/doctor.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt" || true
if [ ! -f "$DEMO/student.onnx" ]; then
  $VS demo --out "$DEMO" --iterations 40 --teacher-iterations 40
fi
$VS calibrate "$DEMO/student.onnx" --frames "$DEMO/synth" --target trt --num-frames 64 \
  --out "$OUT/student.int8.trt.qdq.onnx"
MODELS=("$DEMO/train/student/model.pt" "$DEMO/student.onnx" "$DEMO/student.int8.qdq.onnx")
if $PY -c "import tensorrt" 2>/dev/null; then
  $VS build-engine "$DEMO/student.onnx" --fp16 --out "$OUT/student.fp16.engine" --timing-cache "$OUT/timing.cache"
  $VS build-engine "$OUT/student.int8.trt.qdq.onnx" --int8 --out "$OUT/student.int8.engine" \
    --timing-cache "$OUT/timing.cache"
  MODELS+=("$OUT/student.fp16.engine" "$OUT/student.int8.engine")
else
  echo "TensorRT is not installed here: engines skipped (torch CUDA and onnxruntime are still measured)"
  $VS build-engine "$OUT/student.int8.trt.qdq.onnx" --int8 --explain --for-trt 10.3 > "$OUT/int8_plan_trt10.json"
fi
$VS bench "${MODELS[@]}" --dataset "$DEMO/synth" --out "$OUT/report" --runs 200 --warmup 20 --reference "$DEMO/student.onnx"
echo "report: $OUT/report/report.md"
