"""numpy-only foundations: labels, the one preprocessing, configs, manifests, safe file writes.

Nothing in this package imports torch, onnx or tensorrt.
"""
