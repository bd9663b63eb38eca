"""Calibration and INT8 Q/DQ quantisation (issue 4).

frames.py       which frames calibrate (seeded train sample, image folder, video) and which judge (held out)
quantize_ort.py onnxruntime quantize_static: CPU flavour (u8/s8) and TensorRT-style settings, cached ranges
quantize_trt.py NVIDIA ModelOpt ONNX PTQ for TensorRT (optional; child process), TensorRT scale caches
structure.py    Q/DQ structure checks (symmetric int8, per-channel axis 0, no int32 bias, no INT64 I/O)
gate.py         accuracy gate INT8 vs FP32 on held-out frames (mIoU drop, per-class drop, agreement)
sensitivity.py  sensitivity search on the Q/DQ graph (every node behind activation Q/DQ, leave-one-out) and
                the rounds of nodes kept in float
zero_point.py   exact S8 → U8 activation shift of a Q/DQ model (TensorRT flavour on onnxruntime's CPU kernels)
config.py       CalibConfig (presets calib/*.yaml), commands.py: `vsseg-edge calibrate`
pipeline.py     `calibrate()`: the whole step, writes model.int8.qdq.onnx + manifest
legacy.py       TensorRT 8.6/10 implicit INT8 calibrator (cache keyed by model + preprocessing + frames)
Nothing here imports torch, except ModelOpt in its own child process.
"""
