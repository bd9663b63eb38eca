"""ONNX graph clean-up and inspection: onnxsim, onnx.checker, node counts, boundary dtypes.

Everything here works on an in-memory `onnx.ModelProto`; writing the file is the exporter's job.
"""

from __future__ import annotations

from collections import Counter

from ..core.errors import VssegError

# TensorRT takes these at the graph boundary; INT64 (ArgMax's natural output) is what users trip over.
BOUNDARY_DTYPES = ("FLOAT", "FLOAT16", "UINT8", "INT8", "INT32", "BOOL")


def simplify(model, where: str):
    """onnxsim's simplification (constant folding, shape inference, dead-node removal), checked by onnxsim."""
    from ..core.errors import require

    onnxsim = require("onnxsim", extra="export")
    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise VssegError(f"{where}: onnxsim could not validate the simplified graph; export with --no-simplify")
    return simplified


def check(model, where: str) -> None:
    """onnx.checker with full shape inference; a failure is an export failure, reported in one line."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise VssegError(f"{where}: onnx.checker rejected the exported graph ({str(exc).splitlines()[0]})") from None


def opset_of(model) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _tensor_io(value_info) -> dict:
    import onnx

    ttype = value_info.type.tensor_type
    dims = [d.dim_param if d.dim_param else d.dim_value for d in ttype.shape.dim]
    return {"name": value_info.name, "dtype": onnx.TensorProto.DataType.Name(ttype.elem_type), "shape": dims}


def boundary(model) -> dict:
    """The graph's inputs and outputs: name, dtype name (e.g. 'UINT8') and shape (str for dynamic dims)."""
    init = {i.name for i in model.graph.initializer}
    return {
        "inputs": [_tensor_io(v) for v in model.graph.input if v.name not in init],
        "outputs": [_tensor_io(v) for v in model.graph.output],
    }


def check_boundary_dtypes(model, where: str) -> None:
    """Refuse a graph with an input or output of a type TensorRT cannot take (INT64 above all)."""
    io = boundary(model)
    bad = [f"{t['name']}: {t['dtype']}" for t in io["inputs"] + io["outputs"] if t["dtype"] not in BOUNDARY_DTYPES]
    if bad:
        raise VssegError(f"{where}: graph boundary has types TensorRT cannot take ({', '.join(bad)})")


def summary(model) -> dict:
    """Node count, op histogram (most frequent first), parameter count and opset of a graph."""
    import numpy as np

    ops = Counter(n.op_type for n in model.graph.node)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    return {
        "opset": opset_of(model),
        "nodes": len(model.graph.node),
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "initializers": len(model.graph.initializer),
        "parameters": params,
        **boundary(model),
    }
