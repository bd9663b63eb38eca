"""Import a TensorRT engine built outside vsseg-edge (trtexec, Polygraphy, another tool's exporter).

An engine runs only on the TensorRT version and GPU model that built it, and vsseg-edge's runtime refuses an
engine whose manifest names another (`engine.cache.check_engine_manifest`). Import therefore happens on the
machine that will run it: the engine is deserialised by the installed TensorRT (a foreign version or GPU
fails here, in one line), its I/O tensors are read as an ONNX graph's are, and the manifest records this
TensorRT version and this GPU. The precision cannot be read back from a plan; `--precision` records what
the user knows (default "unknown"). The smoke run goes through the TensorRT backend `run` uses.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..core.classes import resolve_classes
from ..core.errors import VssegError
from ..core.labels import LabelSet
from ..core.manifest import manifest_path, write_manifest
from ..core.preprocess import preprocess
from .graph import TensorInfo, build_spec, check_output, read_input, read_output, smoke_frame

PRECISIONS = ("fp32", "fp16", "int8", "unknown")


def _infos(tensors) -> tuple[list[TensorInfo], list[TensorInfo]]:
    def info(t):
        return TensorInfo(t.name, tuple(int(d) if int(d) >= 0 else None for d in t.shape), np.dtype(t.dtype).name)

    return [info(t) for t in tensors if t.is_input], [info(t) for t in tensors if not t.is_input]


def import_engine(
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
    precision: str = "unknown",
    device: int = 0,
    force: bool = False,
    modules=None,
    log=print,
) -> dict:
    """Deserialise, check, write the manifest (this TensorRT, this GPU) and smoke-run a foreign engine."""
    from ..runtime.backends.trt import cuda_call, io_tensors, load_trt_modules

    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise VssegError(f"{path}: engine file not found")
    if precision not in PRECISIONS:
        raise VssegError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    mpath = manifest_path(path)
    if mpath.exists() and not force:
        raise VssegError(f"{path}: already has a manifest ({mpath.name}); --force replaces it")
    label_set = resolve_classes(classes)
    trt, cudart = modules or load_trt_modules()
    cuda_call(cudart.cudaSetDevice(device))
    prop = cuda_call(cudart.cudaGetDeviceProperties(device))
    gpu_name = (prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)).strip("\x00").strip()
    gpu = {"index": device, "name": gpu_name, "compute_capability": [int(prop.major), int(prop.minor)]}
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise VssegError(
            f"{path}: TensorRT {trt.__version__} cannot deserialize it on {gpu_name} (built by another "
            "TensorRT version or for another GPU? rebuild it here, or build it from its ONNX with "
            "`vsseg-edge import MODEL.onnx` then `vsseg-edge build-engine`)"
        )
    inputs, outputs = _infos(io_tensors(engine, trt, path.name))
    del engine
    inp = read_input(inputs, where)
    kind = read_output(outputs, label_set.num_classes, where)
    spec = build_spec(inp, size=size, mean=mean, std=std, bgr=bgr, scale=scale, uint8_input=uint8_input, where=where)
    details = {
        "tool": "vsseg-edge import",
        "file": path.name,
        "inputs": [t.to_dict() for t in inputs],
        "outputs": [t.to_dict() for t in outputs],
        "class_set": label_set.name,
    }
    man = write_manifest(
        path,
        "engine",
        model=name or path.stem,
        classes=list(label_set.classes),
        palette=label_set.palette_list(),
        preprocess=spec,
        output=kind,
        precision=precision,
        tensorrt={"version": trt.__version__, "gpu": gpu},
        imported=details,
        content=path,
    )  # the user's own file: a failed manifest write leaves it alone
    try:
        man["imported"]["smoke_run"] = _smoke(path, kind, label_set.num_classes, device, modules)
    except BaseException:
        mpath.unlink(missing_ok=True)
        raise
    from ..core.fileio import write_json

    write_json(mpath, man)
    return man


def _smoke(path: Path, kind: str, num_classes: int, device: int, modules) -> dict:
    """One frame through the TensorRT backend `run` uses (its manifest checks included)."""
    from ..runtime.backends.trt import TrtBackend

    be = TrtBackend(path, device=device, modules=modules)
    try:
        t0 = time.perf_counter()
        out = be.infer(preprocess(smoke_frame(be.preprocess_spec.size), be.preprocess_spec))
        ms = round((time.perf_counter() - t0) * 1e3, 1)
    finally:
        be.close()
    return {**check_output(out, kind, num_classes, str(path)), "ms": ms}
