"""TensorRT engines: a thin, version-aware builder on Polygraphy's TensorRT backend.

`policy` decides, without TensorRT, what a build needs on TensorRT 8.6 / 10 / 11 (precision flags or a
strongly typed network, Q/DQ or a legacy calibrator, an FP16 ONNX for TRT 11); `builder` carries it out
with Polygraphy; `cache` keys engines by everything that makes them valid. Everything but `builder`'s
TensorRT calls is tested on CPU. TensorRT itself has not run on any machine this project is built on.
"""
