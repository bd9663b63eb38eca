"""Serving on NVIDIA Triton: `serve` (PyTriton, the project's own backends), `export-triton` (a model repository
for users' own Triton servers) and the client / load test behind `serve --check`.

PyTriton and tritonclient (the `serve` extra) are imported lazily, through `_triton`, inside the functions that
need them; nothing here imports torch unless a .pt checkpoint is served.
"""
