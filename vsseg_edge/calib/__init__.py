"""Calibration and INT8 Q/DQ quantisation.

frames.py       which frames calibrate (seeded train sample, image folder, video) and which judge (held out)
quantize_ort.py onnxruntime quantize_static: CPU flavour (u8/s8) and TensorRT-style settings, cached ranges
quantize_trt.py NVIDIA ModelOpt ONNX PTQ for TensorRT (optional; child process), TensorRT scale caches
gate.py         accuracy gate INT8 vs FP32 on held-out frames (mIoU drop, per-class drop, agreement)
sensitivity.py  sensitivity search on the Q/DQ graph (every node behind activation Q/DQ, leave-one-out) and
                the rounds of nodes kept in float
config.py       CalibConfig (presets calib/*.yaml), commands.py: `vsseg-edge calibrate`
pipeline.py     `calibrate()`: the whole step, writes model.int8.qdq.onnx + manifest
legacy.py       TensorRT 8.6/10 implicit INT8 calibrator (cache keyed by model + preprocessing + frames)
The Q/DQ graph utilities (structure checks, the S8 → U8 shift, nodes kept in float) are `vsseg_edge.onnx_graph`,
shared with the runtime and the engine builder. Nothing here imports torch, except ModelOpt in its own child
process.
"""
