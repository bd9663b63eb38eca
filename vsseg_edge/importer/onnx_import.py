"""Import an ONNX model made outside vsseg-edge (torch.onnx.export, tf2onnx, Ultralytics, MMDeploy …).

The graph is read through onnxruntime (what `run` uses, so the edge install can import too); with the onnx
package present it is also checked by onnx.checker and scanned for Q/DQ nodes (an INT8 Q/DQ model becomes a
`qdq_onnx` artifact). Without onnx, Q/DQ is recognised by the operator names in the file's bytes, and the
manifest says the checker did not run.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..core.classes import resolve_classes
from ..core.errors import VssegError, require
from ..core.labels import LabelSet
from ..core.manifest import manifest_path, write_manifest
from ..core.preprocess import preprocess
from .graph import TensorInfo, build_spec, check_output, read_input, read_output, smoke_frame

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(bfloat16)": "bfloat16",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(uint32)": "uint32",
    "tensor(int64)": "int64",
    "tensor(uint64)": "uint64",
}


def _infos(args) -> list[TensorInfo]:
    return [
        TensorInfo(
            a.name, tuple(d if isinstance(d, int) and d > 0 else None for d in a.shape), _ORT_TYPES.get(a.type, a.type)
        )
        for a in args
    ]


def inspect_graph(path: Path) -> dict:
    """onnx.checker (when onnx is installed), opset, producer, and whether the graph holds Q/DQ nodes."""
    try:
        import onnx
    except ImportError:
        blob = path.read_bytes()
        return {"checked": False, "qdq": b"QuantizeLinear" in blob and b"DequantizeLinear" in blob}
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise VssegError(f"{path}: not a valid ONNX model ({str(exc).splitlines()[0][:160]})") from None
    model = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "checked": True,
        "qdq": {"QuantizeLinear", "DequantizeLinear"} <= ops,
        "opset": opset,
        "producer": f"{model.producer_name} {model.producer_version}".strip() or None,
        "nodes": len(model.graph.node),
    }


def import_onnx(
    path: str | Path,
    classes: str | Path | LabelSet,
    *,
    size: tuple[int, int] | None = None,
    mean=None,
    std=None,
    bgr: bool = False,
    scale: float = 1.0,
    uint8_input: bool | None = None,
    name: str | None = None,
    force: bool = False,
    log=print,
) -> dict:
    """Check, smoke-run and write the manifest of a foreign ONNX model; return the manifest."""
    require("onnxruntime", extra="edge")
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise VssegError(f"{path}: model file not found")
    if path.suffix.lower() != ".onnx":
        raise VssegError(f"{path}: expected an .onnx file (a TensorRT engine: .engine or .plan)")
    mpath = manifest_path(path)
    if mpath.exists() and not force:
        raise VssegError(f"{path}: already has a manifest ({mpath.name}); --force replaces it")
    label_set = resolve_classes(classes)
    graph = inspect_graph(path)
    from ..runtime.backends.ort import ort_session

    session = ort_session(path)  # the CPU provider, full optimisation: what `run` would load
    inputs, outputs = _infos(session.get_inputs()), _infos(session.get_outputs())
    inp = read_input(inputs, where)
    kind = read_output(outputs, label_set.num_classes, where)
    spec = build_spec(inp, size=size, mean=mean, std=std, bgr=bgr, scale=scale, uint8_input=uint8_input, where=where)
    t0 = time.perf_counter()
    out = session.run(None, {inputs[0].name: preprocess(smoke_frame(spec.size), spec)})[0]
    smoke = {**check_output(out, kind, label_set.num_classes, where), "ms": round((time.perf_counter() - t0) * 1e3, 1)}
    del session
    qdq = graph.pop("qdq")
    details = {
        "tool": "vsseg-edge import",
        "file": path.name,
        "inputs": [t.to_dict() for t in inputs],
        "outputs": [t.to_dict() for t in outputs],
        "onnx": graph,
        "smoke_run": smoke,
        "class_set": label_set.name,
    }
    # content=path: the bytes are the user's file itself, which a failed manifest write must leave alone
    man = write_manifest(
        path,
        "qdq_onnx" if qdq else "onnx",
        model=name or path.stem,
        classes=list(label_set.classes),
        palette=label_set.palette_list(),
        preprocess=spec,
        output=kind,
        precision="int8" if qdq else "fp32",
        content=path,
        imported=details,
    )
    _check_run_accepts(path, log)
    return man


def _check_run_accepts(path: Path, log) -> None:
    """Open the model the way `run` does (manifest checks included); if that fails, the manifest goes again."""
    from ..runtime.backends import open_backend

    try:
        with open_backend(path, "ort", providers=["CPUExecutionProvider"]) as be:
            be.infer(preprocess(smoke_frame(be.preprocess_spec.size), be.preprocess_spec))
    except BaseException:
        manifest_path(path).unlink(missing_ok=True)
        raise
