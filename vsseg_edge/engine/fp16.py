"""FP32 ONNX → mixed-precision FP16 ONNX, for TensorRT 11 (no FP16 builder flag; strongly typed builds).

NVIDIA's ModelOpt AutoCast (`modelopt.onnx.autocast.convert_to_mixed_precision`) is used when installed;
otherwise onnxconverter-common's `convert_float_to_float16`. Either way the graph inputs and outputs keep
their types (FP32 / uint8 in, FP32 logits or integer labels out), so the runtime and the manifest do not change.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import MissingDependency, VssegError
from ..core.fileio import atomic_path

# ops whose FP16 version loses accuracy or has no benefit; kept in FP32 by either converter
KEEP_FP32_OPS = ("Resize", "ArgMax", "Softmax", "ReduceMean", "MatMul")


def convert_to_fp16(src: str | Path, dst: str | Path) -> str:
    """Write the FP16 version of `src` to `dst` atomically; return the converter's name."""
    import onnx

    src, dst = Path(src), Path(dst)
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision

        # keyword names as in ModelOpt's signature and TensorRT's samples/python/strongly_type_autocast
        model = convert_to_mixed_precision(
            onnx_path=str(src), low_precision_type="fp16", keep_io_types=True, op_types_to_exclude=list(KEEP_FP32_OPS)
        )
        converter = "modelopt.onnx.autocast"
    except ImportError:
        try:
            from onnxconverter_common import float16
        except ImportError:
            raise MissingDependency(
                "FP16 ONNX for TensorRT 11 needs nvidia-modelopt or onnxconverter-common: "
                "pip install 'vsseg-edge[export]'"
            ) from None
        model = float16.convert_float_to_float16(
            onnx.load(str(src)), keep_io_types=True, op_block_list=list(KEEP_FP32_OPS)
        )
        converter = "onnxconverter_common.float16"
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise VssegError(f"{src}: FP16 conversion produced an invalid model ({str(exc).splitlines()[0]})") from None
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return converter
