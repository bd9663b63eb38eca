"""`vsseg-edge import`: models made elsewhere (an ONNX from any exporter, a TensorRT engine built by trtexec or
Polygraphy) become vsseg-edge artifacts.

Every step of the project reads an artifact's manifest, never guesses: the preprocessing, the classes, what
the output is. A foreign model has no manifest, so `import` asks the user for what cannot be read from the
file (the classes, the normalisation, a size for a size-free graph), reads the rest from the graph (input
dtype and layout, logits or labels output, sizes), checks that the two agree, runs the model once through
the same backend `run` uses, and only then writes `<model>.json` beside it. The model file itself is never
modified. After that, `run`, `bench`, `calibrate` (ONNX) and `build-engine` (ONNX) take it like their own.
"""
