"""Build a TensorRT engine from a vsseg-edge ONNX, through Polygraphy's TensorRT loaders.

    ONNX + manifest ─► plan_build (policy, no TensorRT) ─► [FP16 ONNX on TRT 11] ─► Polygraphy:
    NetworkFromOnnxPath ─► CreateConfig ─► EngineBytesFromNetwork ─► engine (atomic) + manifest

Our own TensorRT code is `_loaders` (Polygraphy loaders configured by the plan), `_serialize` (runs them and
turns Polygraphy's errors into one line) and `_platform` (DLA cores, fast INT8/FP16 where TensorRT still says).
Everything around it (planning, ONNX checks, caching, manifests) runs and is tested without TensorRT, and the
loaders are constructed in the tests with the installed Polygraphy (its keyword names are real; running them
needs TensorRT). NOT YET RUN ON REAL TENSORRT: no machine this project is built on can install it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..core.errors import MissingDependency, VssegError
from ..core.fileio import atomic_write, sha256_file
from ..core.manifest import manifest_preprocess, read_manifest, write_manifest
from .cache import engine_key, prepare_timing_cache, tag_timing_cache
from .device import GpuInfo, gpu_info, tensorrt_module, use_device
from .policy import BuildPlan, BuildSettings, parse_version, plan_build

POLYGRAPHY_INSTALL = "pip install 'vsseg-edge[trt]' (polygraphy 0.49.10 or newer)"


def import_tensorrt():
    return tensorrt_module()


def require_polygraphy() -> None:
    """Fail before any work when Polygraphy (the build backend) is missing."""
    import importlib.util

    if importlib.util.find_spec("polygraphy") is None:
        raise MissingDependency(f"polygraphy is not installed; install it with: {POLYGRAPHY_INSTALL}")


def onnx_input(onnx_path: Path) -> tuple[str, list]:
    """(name, dims) of the single graph input; dims hold ints or symbolic names."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf raises several types on corrupt files
        raise VssegError(f"{onnx_path}: not a readable ONNX file ({type(exc).__name__})") from None
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise VssegError(f"{onnx_path}: expected one image input, found {len(inputs)}")
    dims = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in inputs[0].type.tensor_type.shape.dim
    ]
    return inputs[0].name, dims


def check_shapes(onnx_path: Path, settings: BuildSettings) -> tuple[str, list]:
    """Only the batch dimension may be dynamic, and then --batch must give its range."""
    name, dims = onnx_input(onnx_path)
    if len(dims) != 4:
        raise VssegError(f"{onnx_path}: input {name!r} has {len(dims)} dims, expected 4 (N,C,H,W or N,H,W,C)")
    if any(not isinstance(d, int) for d in dims[1:]):
        raise VssegError(
            f"{onnx_path}: input {name!r} has dynamic spatial/channel dims {dims}; TensorRT engines "
            "here are built for one image size: re-export with a static --size"
        )
    if not isinstance(dims[0], int) and settings.batch is None:
        raise VssegError(f"{onnx_path}: input {name!r} has a dynamic batch; give its range with --batch MIN,OPT,MAX")
    if isinstance(dims[0], int) and settings.batch is not None:
        raise VssegError(
            f"{onnx_path}: input batch is static ({dims[0]}); --batch needs an ONNX exported with --dynamic-batch"
        )
    return name, dims


def build_engine(
    onnx_path: str | Path,
    out: str | Path,
    settings: BuildSettings,
    *,
    calib_frames: str | None = None,
    cache_dir: str | Path | None = None,
    device: int = 0,
    log=print,
) -> dict:
    """Build (or take from the cache) the engine for `onnx_path`; write `out` + manifest; return the manifest."""
    onnx_path, out = Path(onnx_path), Path(out)
    if out.is_dir():
        raise VssegError(f"--out {out}: is a directory, expected an engine file path")
    onnx_man = read_manifest(onnx_path, kind=("onnx", "qdq_onnx"), verify=True)
    input_name, dims = check_shapes(onnx_path, settings)
    if onnx_man["kind"] == "qdq_onnx":
        from ..onnx_graph import require_qdq_structure

        require_qdq_structure(onnx_path)  # symmetric int8, zero points 0, no int32 bias, no INT64 I/O
    trt = import_tensorrt()
    gpu = gpu_info(device)
    use_device(device)  # TensorRT builds on the current CUDA device: make it the one the manifest names
    dla_cores, fast = _platform(trt, settings)
    plan = plan_build(
        settings,
        trt.__version__,
        onnx_man["kind"],
        has_calibration_frames=bool(calib_frames),
        compute_capability=gpu.compute_capability,
        num_dla_cores=dla_cores,
        platform_fast=fast,
    )
    for w in plan.warnings:
        log(f"warning: {w}")
    key = engine_key(onnx_man["sha256"], settings.to_dict(), trt.__version__, gpu.to_dict(), plan.to_dict())
    cached = Path(cache_dir) / f"{key}.engine" if cache_dir else None
    if cached is not None and cached.is_file():
        log(f"engine cache hit: {cached}")
        with atomic_write(out) as fh, open(cached, "rb") as src:
            shutil.copyfileobj(src, fh)
    else:
        require_polygraphy()
        prepare_timing_cache(settings.timing_cache, trt.__version__, gpu.to_dict(), log)
        engine_bytes = _build_bytes(trt, onnx_path, out, plan, settings, input_name, dims, onnx_man, calib_frames)
        tag_timing_cache(settings.timing_cache, trt.__version__, gpu.to_dict())
        with atomic_write(out) as fh:
            fh.write(engine_bytes)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(cached) as fh:
                fh.write(engine_bytes)
    return _write_engine_manifest(out, onnx_path, onnx_man, settings, plan, trt.__version__, gpu, key)


def _build_bytes(trt, onnx_path, out, plan, settings, input_name, dims, onnx_man, calib_frames) -> bytes:
    src = onnx_path
    tmp_fp16 = None
    try:
        if plan.onnx_source == "fp16-convert":
            from .fp16 import convert_to_fp16

            tmp_fp16 = out.with_name(f".{out.name}.fp16.onnx")
            convert_to_fp16(onnx_path, tmp_fp16)
            src = tmp_fp16
        calibrator = None
        if plan.int8_mode == "calibrator":
            batch = settings.batch[1] if settings.batch else int(dims[0])  # TensorRT calibrates at the opt shape
            calibrator = _legacy_calibrator(trt, onnx_path, onnx_man, calib_frames, out, batch_size=batch)
        return _serialize(trt, src, plan, settings, input_name, dims, calibrator)
    finally:
        if tmp_fp16 is not None and tmp_fp16.exists():
            tmp_fp16.unlink()


def _loaders(trt, onnx_path: Path, plan: BuildPlan, settings: BuildSettings, input_name: str, dims: list, calibrator):
    """The Polygraphy loader chain for `plan` (nothing runs until it is called; constructing needs no TensorRT)."""
    try:
        from polygraphy.backend.trt import (
            CreateConfig,
            EngineBytesFromNetwork,
            NetworkFromOnnxPath,
            PostprocessConfig,
            Profile,
        )
    except ImportError:
        raise MissingDependency(f"polygraphy is not installed; install it with: {POLYGRAPHY_INSTALL}") from None
    # strongly_typed= exists from Polygraphy 0.49.10 (TensorRT 10.0); pass it only where the plan needs the flag
    net_kwargs = {"strongly_typed": True} if plan.strongly_typed_flag else {}
    try:
        network = NetworkFromOnnxPath(str(onnx_path), **net_kwargs)
    except TypeError:
        raise MissingDependency(f"this polygraphy is too old for strongly typed builds; {POLYGRAPHY_INSTALL}") from None
    profiles = None
    if settings.batch is not None:
        lo, opt, hi = settings.batch
        rest = tuple(dims[1:])
        profiles = [Profile().add(input_name, min=(lo, *rest), opt=(opt, *rest), max=(hi, *rest))]
    timing = settings.timing_cache
    config = CreateConfig(
        fp16="FP16" in plan.flags or None,  # BuilderFlag.FP16/INT8: 8.6 and 10.x only (the plan has none on 11)
        int8="INT8" in plan.flags or None,
        calibrator=calibrator,
        profiles=profiles,
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: settings.workspace_mib << 20},
        load_timing_cache=timing if timing and Path(timing).is_file() else None,
        builder_optimization_level=settings.builder_optimization_level,
        use_dla=settings.dla_core is not None or None,  # default_device_type = DLA, DLA_core = 0
        allow_gpu_fallback=settings.dla_core is not None or None,  # BuilderFlag.GPU_FALLBACK
    )
    if settings.dla_core:
        core = settings.dla_core
        config = PostprocessConfig(config, lambda builder, network, cfg: setattr(cfg, "DLA_core", core))
    return EngineBytesFromNetwork(network, config, save_timing_cache=timing)


def _serialize(
    trt, onnx_path: Path, plan: BuildPlan, settings: BuildSettings, input_name: str, dims: list, calibrator
) -> bytes:
    """Run the loaders; Polygraphy reports every failure (parser errors, an option this TensorRT lacks — "X is
    not available on TensorRT version Y" — or a failed build) as a PolygraphyException: one line here."""
    from polygraphy.exception import PolygraphyException

    build = _loaders(trt, onnx_path, plan, settings, input_name, dims, calibrator)
    try:
        engine = build()  # IHostMemory (the buffer build_serialized_network returns)
    except PolygraphyException as exc:
        first = (str(exc).strip().splitlines() or ["no message"])[0]
        raise VssegError(
            f"{onnx_path}: TensorRT {trt.__version__} could not build the engine: {first} (see the TensorRT log above)"
        ) from None
    if not engine:
        raise VssegError(f"{onnx_path}: TensorRT {trt.__version__} returned no engine (see its log above)")
    return bytes(engine)


def _platform(trt, settings: BuildSettings) -> tuple[int | None, dict]:
    """DLA cores (only asked when --dla-core is given) and TensorRT's own fast-INT8/FP16 answer where it still
    gives one without a deprecation (Builder.platform_has_fast_*: until 10.4; deprecated 10.5, removed in 11)."""
    needs_fast = settings.precision in ("int8", "fp16") and parse_version(trt.__version__) < (10, 5)
    if settings.dla_core is None and not needs_fast:
        return None, {}
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    dla = int(getattr(builder, "num_DLA_cores", 0)) if settings.dla_core is not None else None
    fast = {}
    if needs_fast:
        attr = f"platform_has_fast_{settings.precision}"
        if hasattr(builder, attr):
            fast[settings.precision] = bool(getattr(builder, attr))
    return dla, fast


def _legacy_calibrator(
    trt, onnx_path: Path, onnx_man: dict, frames: str, out: Path, *, batch_size: int = 1, num_frames: int = 500
):
    """TensorRT 8.6/10 implicit-INT8 calibrator over seeded train frames, cache keyed by model+preprocessing+frames.

    `batch_size` must be the network's input batch (its opt batch for a dynamic one): TensorRT calibrates an
    explicit-batch network at that shape and reads exactly that many frames from the device pointer."""
    from ..calib.frames import calibration_frames
    from ..calib.legacy import BatchFeeder, CalibrationCache, calibration_cache_key, make_entropy_calibrator
    from .device import DeviceBuffer

    spec = manifest_preprocess(onnx_man, str(onnx_path))
    frame_set, _ = calibration_frames(frames, num_frames, seed=0, split="train")
    feeder = BatchFeeder(frame_set.frames, spec, batch_size=batch_size)
    key = calibration_cache_key(onnx_man["sha256"], spec, frame_set.sha1, feeder.batch_size)
    buffer = DeviceBuffer(int(np.prod(feeder.shape)) * np.dtype(spec.dtype).itemsize)
    return make_entropy_calibrator(trt, feeder, CalibrationCache.in_dir(out.parent, key), buffer.upload)


def _write_engine_manifest(
    out: Path,
    onnx_path: Path,
    onnx_man: dict,
    settings: BuildSettings,
    plan: BuildPlan,
    trt_version: str,
    gpu: GpuInfo,
    key: str,
) -> dict:
    return write_manifest(
        out,
        "engine",
        model=onnx_man["model"],
        classes=onnx_man["classes"],
        palette=onnx_man.get("palette"),
        preprocess=manifest_preprocess(onnx_man, str(onnx_path)),
        output=onnx_man.get("output", "logits"),
        precision=settings.precision,
        parent=onnx_path,
        tensorrt={"version": trt_version, "gpu": gpu.to_dict()},
        build={"settings": settings.to_dict(), "plan": plan.to_dict()},
        cache_key=key,
        onnx_kind=onnx_man["kind"],
        onnx_sha256=sha256_file(onnx_path),
    )
