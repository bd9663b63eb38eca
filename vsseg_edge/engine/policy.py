"""What an engine build needs on each TensorRT version — decided without importing TensorRT.

    TensorRT 8.6 (JetPack 5)  weakly typed; BuilderFlag.FP16 / INT8; explicit-batch network flag;
                              INT8 from a Q/DQ ONNX (INT8 flag on) or implicit calibration (IInt8EntropyCalibrator2)
    TensorRT 10.x             as 8.6 (explicit batch is the default); calibrators deprecated since 10.1,
                              weak typing deprecated since 10.12
    TensorRT 11.x             always strongly typed: BuilderFlag.FP16/INT8, EXPLICIT_BATCH, the calibrators and
                              Builder.platform_has_fast_int8/fp16 are gone, the STRONGLY_TYPED network flag is
                              deprecated and ignored (so it is not set); FP16 comes from a mixed-precision FP16 ONNX
                              (ModelOpt AutoCast or an equivalent converter), INT8 only from a Q/DQ ONNX

Names checked against the Python bindings' sources of TensorRT release/8.6, 10.3, 10.16, 11.0 and 11.1
(python/src/infer/pyCore.cpp in github.com/NVIDIA/TensorRT), not against a running TensorRT.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..core.errors import VssegError

MIN_VERSION = (8, 6)
MAX_MAJOR = 11
# Fast INT8 (DP4A or tensor cores): sm_61 and sm_70 onwards; not sm_60 (P100) nor sm_62 (TX2).
# Fast FP16: sm_53, sm_60, sm_62 and sm_70 onwards; not sm_61 (GeForce Pascal runs FP16 at 1/64 rate).
# TensorRT answered the same through Builder.platform_has_fast_int8/fp16 (deprecated 10.5, removed 11): the
# builder prefers that answer where it exists and is not deprecated, and uses this table otherwise.
FAST_INT8_SM = ((6, 1),)
FAST_FP16_SM = ((5, 3), (6, 0), (6, 2))
ALL_FAST_FROM_SM = (7, 0)


def has_fast(precision: str, cc: tuple[int, int]) -> bool:
    """Whether a GPU of compute capability `cc` runs `precision` ("int8" | "fp16") fast, by the table above."""
    cc = tuple(cc)
    if cc >= ALL_FAST_FROM_SM:
        return True
    return cc in (FAST_INT8_SM if precision == "int8" else FAST_FP16_SM if precision == "fp16" else ())


def parse_version(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in str(text).split(".")[:2]]
        major, minor = parts if len(parts) == 2 else (parts[0], 0)  # "11" means 11.0
    except (ValueError, IndexError):
        raise VssegError(f"TensorRT version {text!r} is not of the form MAJOR.MINOR[.PATCH]") from None
    return major, minor


@dataclass(frozen=True)
class BuildSettings:
    """What the user asked for (`vsseg-edge build-engine` flags)."""

    precision: str = "fp16"  # fp32 | fp16 | int8
    workspace_mib: int = 2048
    timing_cache: str | None = None
    dla_core: int | None = None
    batch: tuple[int, int, int] | None = None  # (min, opt, max) for a dynamic-batch ONNX; None = static
    builder_optimization_level: int | None = None
    strongly_typed: bool | None = None  # None = the version's default (False before 11, always True on 11)

    def __post_init__(self):
        if self.precision not in ("fp32", "fp16", "int8"):
            raise VssegError(f"--precision: expected fp32, fp16 or int8, got {self.precision!r}")
        if self.workspace_mib <= 0:
            raise VssegError(f"--workspace: must be a positive number of MiB, got {self.workspace_mib}")
        if self.batch is not None:
            lo, opt, hi = self.batch
            if not 1 <= lo <= opt <= hi:
                raise VssegError(f"--batch: expected min<=opt<=max, all >= 1, got {self.batch}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BuildPlan:
    """How to build on one TensorRT version: the exact knobs the builder turns."""

    trt_version: tuple[int, int]
    strongly_typed: bool
    flags: tuple[str, ...]  # BuilderFlag names to set (empty on TRT 11)
    onnx_source: str  # "as-is" | "fp16-convert" (TRT 11 FP16: convert the FP32 ONNX first)
    int8_mode: str | None  # None | "qdq" | "calibrator"
    explicit_batch_flag: bool
    strongly_typed_flag: bool = False  # set NetworkDefinitionCreationFlag.STRONGLY_TYPED (10.x; ignored on 11)
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["trt_version"] = ".".join(map(str, self.trt_version))
        return d


def plan_build(
    settings: BuildSettings,
    trt_version: str,
    onnx_kind: str,
    *,
    has_calibration_frames: bool = False,
    compute_capability: tuple[int, int] | None = None,
    num_dla_cores: int | None = None,
    platform_fast: dict | None = None,
) -> BuildPlan:
    """Decide how to build `settings` on `trt_version` for an ONNX of manifest kind `onnx_kind` ("onnx" | "qdq_onnx").

    `platform_fast` is TensorRT's own answer ({"int8": bool, "fp16": bool}) where the installed version still
    gives it; otherwise the compute-capability table decides. Raises a one-line VssegError naming the option
    that the installed version or GPU cannot do, and the fix.
    """
    v = parse_version(trt_version)
    if v < MIN_VERSION or v[0] > MAX_MAJOR:
        raise VssegError(f"TensorRT {trt_version} is not supported; vsseg-edge builds with TensorRT 8.6, 10.x or 11.x")
    v11 = v[0] >= 11
    warnings: list[str] = []
    _check_gpu(settings, compute_capability, num_dla_cores, platform_fast or {})
    strongly = True if v11 else bool(settings.strongly_typed)
    if settings.strongly_typed is False and v11:
        raise VssegError("--weakly-typed: TensorRT 11 builds every network strongly typed; drop the option")
    if settings.strongly_typed and v[0] < 10:
        raise VssegError(f"--strongly-typed: needs TensorRT 10 or newer, this is {trt_version}")
    flags: list[str] = []
    onnx_source, int8_mode = "as-is", None
    p = settings.precision
    if p == "int8":
        if onnx_kind == "qdq_onnx":
            int8_mode = "qdq"
            if not strongly:
                flags += ["INT8", "FP16"]  # FP16 for the layers the Q/DQ graph leaves unquantised
        elif v11:
            raise VssegError(
                "--int8: TensorRT 11 removed implicit INT8 calibration; quantise first with "
                "`vsseg-edge calibrate model.onnx --target trt` and build from the Q/DQ ONNX"
            )
        elif strongly:
            raise VssegError("--int8 with --strongly-typed needs a Q/DQ ONNX (vsseg-edge calibrate --target trt)")
        elif not has_calibration_frames:
            raise VssegError(
                "--int8 on an FP32 ONNX needs --calib-frames DIR for the legacy calibrator, or a Q/DQ "
                "ONNX from `vsseg-edge calibrate --target trt` (recommended)"
            )
        else:
            int8_mode = "calibrator"
            flags += ["INT8", "FP16"]
            if v >= (10, 1):
                warnings.append(
                    "implicit INT8 calibration is deprecated since TensorRT 10.1 and removed in 11; "
                    "prefer a Q/DQ ONNX from `vsseg-edge calibrate --target trt`"
                )
    elif p == "fp16":
        if onnx_kind == "qdq_onnx":
            raise VssegError("--fp16 on a Q/DQ ONNX: build it with --int8, or build FP16 from the FP32 ONNX")
        if strongly:
            onnx_source = "fp16-convert"
        else:
            flags.append("FP16")
    if not strongly and v >= (10, 12):
        warnings.append(
            "weakly typed builds are deprecated since TensorRT 10.12 (TensorRT 11 is always strongly typed)"
        )
    return BuildPlan(
        v,
        strongly,
        tuple(flags),
        onnx_source,
        int8_mode,
        explicit_batch_flag=v[0] < 10,
        strongly_typed_flag=strongly and not v11,
        warnings=tuple(warnings),
    )


def _check_gpu(settings: BuildSettings, cc: tuple[int, int] | None, num_dla: int | None, platform_fast: dict) -> None:
    p = settings.precision
    if p in ("int8", "fp16") and settings.dla_core is None:  # DLA runs INT8/FP16 whatever the GPU does
        fast = platform_fast.get(p)
        if fast is None and cc is not None:
            fast = has_fast(p, cc)
        where = f"this GPU (sm_{cc[0]}{cc[1]})" if cc is not None else "this GPU"
        if fast is False and p == "int8":
            raise VssegError(f"--int8: {where} has no fast INT8 (sm_61, or sm_70 and newer); build with --fp16")
        if fast is False:
            raise VssegError(f"--fp16: {where} has no fast FP16; build without --fp16 (FP32)")
    if settings.dla_core is not None:
        if num_dla is None:  # not asked (--explain plans without a device): only the precision rule below
            pass
        elif not num_dla:
            raise VssegError(
                f"--dla-core {settings.dla_core}: this device has no DLA cores (DLA exists on Jetson Xavier/Orin)"
            )
        elif not 0 <= settings.dla_core < num_dla:
            raise VssegError(f"--dla-core {settings.dla_core}: this device has DLA cores 0..{num_dla - 1}")
        if settings.precision == "fp32":
            raise VssegError("--dla-core: DLA runs FP16 or INT8 only; add --fp16 or --int8")
