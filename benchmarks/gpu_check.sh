#!/usr/bin/env bash
# GPU / TensorRT check, one prepared call on a machine with an NVIDIA GPU (TensorRT optional), from the repo root:
#   bash benchmarks/gpu_check.sh [OUT]      OUT: the argument, else $OUT (set by remote runners), else runs/gpu_check
# Needs python3 with torch (CUDA build), onnx, onnxsim, onnxruntime and this package's light dependencies
# (typer, pyyaml, opencv-python-headless, tqdm, rich); tensorrt + polygraphy + cuda-python are optional.
#  1. environment: vsseg-edge doctor, nvidia-smi (the card is named in the log and in the bench report);
#  R. the runtime at the speed of the model, first (it is what the GPU time is for): the CUDA tests of the device
#     preprocessing and stages (pytest -m gpu, where pytest is installed), then benchmarks/gpu_runtime.py gpu:
#     backend-only FPS vs `vsseg-edge run` FPS on a 1024x2048 file and live latency for PSPNet-18, BiSeNetV2,
#     ESPNet (torch; onnxruntime CUDA and TensorRT where installed) into OUT/gpu_runtime/gpu_runtime.{md,json}
#     (commit both as benchmarks/reports/gpu_runtime.{md,json}; the JSON keeps the committed CPU section);
#  2. cuda-python check: the calls the TensorRT backend makes (device properties, pinned/device buffers, async
#     copies on one stream, execute_async_v3 with the stream handle) against the REAL CUDA runtime, with a
#     TensorRT TEST DOUBLE whose "engine" is an on-stream device copy; it verifies cuda-python use, not TensorRT;
#  3. reuses $DEMO (default runs/demo) or makes a short one: synthetic data, student checkpoint, FP32 ONNX, INT8;
#  4. TensorRT-flavour Q/DQ INT8 ONNX (`calibrate --target trt`; ModelOpt if installed, else onnxruntime);
#  5. with TensorRT: FP16 and INT8 engines (shared timing cache); without: one clear line, and the build plans
#     for TensorRT 8.6 / 10.3 / 11.0 (`build-engine --explain`) so the per-version choices are still recorded;
#  6. bench: torch (CUDA), onnxruntime (its installed providers) and the engines side by side: latency p50/p99,
#     FPS, mIoU, TC, agreement with the FP32 ONNX.
# A failed optional step prints why and the check goes on; only missing demo artefacts or a failed bench stop it.
# Everything goes to OUT: gpu_check.log (all output), trt_plans.txt or the engines, report/ (report.md/.json).
# Knobs (environment): PY, DEMO, DEMO_ITERS (40), DEMO_ARGS (extra `demo` options, e.g. "--train-sequences 3"),
# RUNS (200), WARMUP (20), MAX_SEQ (all sequences), CALIB_FRAMES (64), RUNTIME_BACKENDS ("torch ort trt"),
# ONLY_RUNTIME (1: stop after step R).
set -uo pipefail
OUT=${1:-${OUT:-runs/gpu_check}}
PY=${PY:-python3}
DEMO=${DEMO:-runs/demo}
DEMO_ITERS=${DEMO_ITERS:-40}
RUNS=${RUNS:-200}
WARMUP=${WARMUP:-20}
CALIB_FRAMES=${CALIB_FRAMES:-64}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
VS=("$PY" -m vsseg_edge.cli)
say() { printf '\n== %s\n' "$*"; }
optional() { "$@" || echo "(optional step failed, exit $?: $*)"; }

say "environment"
date -u
optional "${VS[@]}" doctor
optional nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv

say "R. the runtime at the speed of the model: CUDA tests of the device stages, then benchmarks/gpu_runtime.py"
if "$PY" -c "import pytest" 2>/dev/null; then
  optional "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/runtime/test_device_preprocess.py \
    tests/runtime/test_device_stage.py tests/runtime/test_torch_options.py tests/runtime/test_ort_binding.py
else
  echo "pytest is not installed: the CUDA tests are skipped (pip install pytest)"
fi
# shellcheck disable=SC2086  # RUNTIME_BACKENDS is a list of names
optional "$PY" benchmarks/gpu_runtime.py gpu --out "$OUT/gpu_runtime" --backends ${RUNTIME_BACKENDS:-torch ort trt}
[ "${ONLY_RUNTIME:-0}" = 1 ] && { echo "ONLY_RUNTIME=1: stopping after the runtime figures"; date -u; exit 0; }

say "cuda-python calls of the TensorRT backend, against the real CUDA runtime (TensorRT is a TEST DOUBLE here)"
optional "$PY" - <<'EOF'
import importlib.util, sys, types
import numpy as np
if importlib.util.find_spec("cuda") is None:
    print("cuda-python is not installed: skipped (pip install cuda-python)"); sys.exit(0)
from vsseg_edge.engine.device import DeviceBuffer, cudart, gpu_info, use_device
from vsseg_edge.runtime.backends import trt as trt_backend
rt = cudart()
print("cuda-python runtime module:", rt.__name__)
gpu = gpu_info(0); use_device(0)
print("gpu_info(0):", gpu)
buf = DeviceBuffer(64); x = np.arange(16, dtype=np.float32)
addr = buf.upload(x); back = np.zeros_like(x)
trt_backend.cuda_call(rt.cudaMemcpy(back.ctypes.data, addr, x.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost))
assert np.array_equal(back, x), "DeviceBuffer round trip"
print("DeviceBuffer (legacy calibrator input) round trip: ok")
for dt in (np.float16, np.float32, np.uint8, np.int32):
    hb = trt_backend.HostDeviceBuffer(rt, (1, 3, 4, 6), np.dtype(dt)); hb.host[...] = 3; hb.free()
print("HostDeviceBuffer (pinned + device) float16/float32/uint8/int32: ok")

class Ctx:  # TEST DOUBLE of an execution context: "inference" = device-to-device copy on the given stream
    def __init__(self): self.addr = {}
    def get_tensor_shape(self, name): return (1, 3, 4, 6)
    def set_tensor_address(self, name, ptr): self.addr[name] = ptr; return True
    def execute_async_v3(self, stream_handle):
        trt_backend.cuda_call(rt.cudaMemcpyAsync(self.addr["y"], self.addr["x"], 4 * 72,
                                                 rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream_handle))
        return True
class Engine:  # TEST DOUBLE of an engine with tensor-name I/O (TensorRT 8.5+/10/11 API names)
    num_io_tensors = 2
    def get_tensor_name(self, i): return ("x", "y")[i]
    def get_tensor_mode(self, n): return "in" if n == "x" else "out"
    def get_tensor_shape(self, n): return (1, 3, 4, 6)
    def get_tensor_dtype(self, n): return np.float32
    def create_execution_context(self): return Ctx()
import tempfile, pathlib
from vsseg_edge.core.manifest import write_manifest
from vsseg_edge.core.preprocess import PreprocessSpec
d = pathlib.Path(tempfile.mkdtemp()); eng = d / "double.engine"; eng.write_bytes(b"test double")
write_manifest(eng, "engine", model="double", classes=["a", "b", "c"], preprocess=PreprocessSpec(height=4, width=6),
               output="logits", precision="fp32",
               tensorrt={"version": "double", "gpu": gpu.to_dict()})
fake_trt = types.SimpleNamespace(__version__="double", TensorIOMode=types.SimpleNamespace(INPUT="in"),
                                 Logger=type("L", (), {"WARNING": 2, "__init__": lambda s, l: None}),
                                 Runtime=lambda l: types.SimpleNamespace(deserialize_cuda_engine=lambda b: Engine()),
                                 nptype=lambda t: t)
be = trt_backend.TrtBackend(eng, modules=(fake_trt, rt))
x = np.random.default_rng(0).standard_normal((1, 3, 4, 6)).astype(np.float32)
for _ in range(3):
    assert np.array_equal(be.infer(x), x), "H2D -> on-stream D2D -> D2H round trip"
print("TrtBackend buffers/stream/execute_async_v3(int(stream)) with real CUDA: ok (TensorRT itself NOT exercised)")
from vsseg_edge.core.preprocess import labels_from_output, preprocess
stage = be.device_stage(lut=np.zeros((256, 3), np.uint8), alpha=0.5, overlay=False, slots=3)
frames = [np.random.default_rng(i).integers(0, 256, (4, 6, 3), dtype=np.uint8) for i in range(6)]
pending = [stage.submit(f) for f in frames[:3]]  # three frames in flight on the upload/compute/download streams
results = [p.result() for p in pending] + [stage.submit(f).result() for f in frames[3:]]
for f, r in zip(frames, results):  # the double's "engine" copies its input: labels = argmax of the input
    assert np.array_equal(r.labels, labels_from_output(preprocess(f, be.preprocess_spec), "logits")[0])
    assert r.times["upload_ms"] > 0 and r.times["infer_ms"] >= 0 and r.times["download_ms"] >= 0
stage.close()
be.close()
print("TrtDeviceStage slots, 3 streams, events, cudaStreamWaitEvent with real CUDA: ok (TensorRT NOT exercised)")
EOF

say "demo artefacts ($DEMO)"
if [ ! -f "$DEMO/student.onnx" ] || [ ! -f "$DEMO/student.int8.qdq.onnx" ]; then
  # shellcheck disable=SC2086  # DEMO_ARGS is a list of options
  "${VS[@]}" demo --out "$DEMO" --iterations "$DEMO_ITERS" --teacher-iterations "$DEMO_ITERS" ${DEMO_ARGS:-} \
    || { echo "the demo failed: no student to check (see above)"; exit 1; }
fi

say "TensorRT-flavour Q/DQ INT8 ONNX"
TRT_QDQ="$OUT/student.int8.trt.qdq.onnx"
optional "${VS[@]}" calibrate "$DEMO/student.onnx" --frames "$DEMO/synth" --target trt \
  --num-frames "$CALIB_FRAMES" --out "$TRT_QDQ"

MODELS=("$DEMO/train/student/model.pt" "$DEMO/student.onnx" "$DEMO/student.int8.qdq.onnx")
say "TensorRT engines"
if "$PY" -c "import tensorrt" 2>/dev/null; then
  "$PY" -c "import tensorrt; print('TensorRT', tensorrt.__version__)"
  if "${VS[@]}" build-engine "$DEMO/student.onnx" --fp16 --out "$OUT/student.fp16.engine" \
       --timing-cache "$OUT/timing.cache"; then
    MODELS+=("$OUT/student.fp16.engine")
  else
    echo "FP16 engine build failed (see above)"
  fi
  if [ -f "$TRT_QDQ" ] && "${VS[@]}" build-engine "$TRT_QDQ" --int8 --out "$OUT/student.int8.engine" \
       --timing-cache "$OUT/timing.cache"; then
    MODELS+=("$OUT/student.int8.engine")
  else
    echo "INT8 engine not built (no TensorRT-flavour Q/DQ ONNX, or the build failed: see above)"
  fi
else
  echo "TensorRT is not installed here: engines SKIPPED (torch CUDA and onnxruntime are still measured)"
  for v in 8.6 10.3 11.0; do
    optional "${VS[@]}" build-engine "$DEMO/student.onnx" --fp16 --explain --for-trt "$v" >> "$OUT/trt_plans.txt"
    [ -f "$TRT_QDQ" ] && optional "${VS[@]}" build-engine "$TRT_QDQ" --int8 --explain --for-trt "$v" \
      >> "$OUT/trt_plans.txt"
  done
  echo "build plans per TensorRT version: $OUT/trt_plans.txt"
fi

say "bench: ${MODELS[*]}"
BENCH_ARGS=(--dataset "$DEMO/synth" --out "$OUT/report" --runs "$RUNS" --warmup "$WARMUP"
            --reference "$DEMO/student.onnx")
[ -n "${MAX_SEQ:-}" ] && BENCH_ARGS+=(--max-sequences "$MAX_SEQ")
"${VS[@]}" bench "${MODELS[@]}" "${BENCH_ARGS[@]}" || { echo "bench failed (see above)"; exit 1; }
echo "report: $OUT/report/report.md"
date -u
