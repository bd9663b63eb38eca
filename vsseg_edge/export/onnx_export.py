"""torch → ONNX: the only bridge from a trained model to the deployable graph.

`export_onnx` takes an `nn.Module` plus its metadata (name, classes, preprocessing) and writes ONE
self-contained ONNX file (no external data) with its manifest. Steps: wrap (uint8 NHWC input, ArgMax),
export with torch's maintained dynamo exporter (or the legacy TorchScript one, for comparison), simplify
with onnxsim, `onnx.checker`, refuse INT64 at the graph boundary, then write to a temporary path, check
parity with onnxruntime on real or synthetic frames, and only then rename onto the target: a broken
export leaves no file. `export_checkpoint` is the thin layer that loads a vsseg-edge checkpoint first.

Why dynamo by default: on the vsseg-edge models (static pools) it gives the cleaner graph after onnxsim
(TorchScript leaves Constant nodes), names dynamic batch outputs properly (['batch', C, H, W] instead of
invented symbols) and is the exporter torch maintains. TorchScript exports faster and stays available
(`exporter: torchscript`) for comparison. Dynamo natively emits opset 18 and converts down; when the
conversion fails (ReduceMean from a global pool) the export refuses rather than write another opset.

A checkpoint trained with fake INT8 (QAT, `train.quant`) exports the same way: the exporter writes its fake
quantisers as QuantizeLinear → DequantizeLinear with int8 zero points, so the file is an INT8 Q/DQ model
(manifest kind `qdq_onnx`) for TensorRT (`target="trt"`, as exported) or for onnxruntime on a CPU
(`target="ort"`: activation Q/DQ shifted to uint8, exact, `onnx_graph`); it must pass the same Q/DQ
structure checks as a calibrated model (`onnx_graph`), or nothing is written.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import VssegError
from ..core.fileio import atomic_path, check_output
from ..core.manifest import write_manifest
from ..core.preprocess import PreprocessSpec, resize_frame
from . import simplify as graph
from .parity import ParityReport, check_parity, load_frames
from .presets import ExportPreset

INPUT_NAME = "input"


@dataclass(frozen=True)
class ExportResult:
    """The written file, its manifest, the parity figures, graph summary and timings (seconds)."""

    path: Path
    manifest: dict
    parity: ParityReport
    summary: dict
    timings: dict


MANIFEST_BYTES = 64 * 1024  # room for the manifest and the graph beside the weights, in the free-space check


def check_output_path(out: str | Path, inputs=(), need_bytes: int = 0) -> Path:
    """Refuse, before exporting, an --out that is not a writable new .onnx path (`fileio.check_output`).

    A missing parent folder is fine (atomic_path creates it); the output must not be one of `inputs`.
    """
    return check_output(out, "--out", suffixes=(".onnx",), inputs=inputs, need_bytes=need_bytes)


def weight_bytes(model) -> int:
    """Bytes of the model's float32 parameters and buffers: about what the ONNX file holds."""
    return sum(t.numel() * 4 for t in list(model.parameters()) + list(model.buffers()))


def export_sizes(model, preprocess: PreprocessSpec, preset: ExportPreset) -> tuple[PreprocessSpec, PreprocessSpec]:
    """(spec the torch model takes at the export size, spec of the exported graph's input)."""
    h, w = preset.size or preprocess.size
    multiple = getattr(model, "input_multiple", None)
    if multiple and (h % multiple or w % multiple):
        where = "--size" if preset.size else "checkpoint preprocessing size"
        raise VssegError(
            f"{where} {h}x{w}: model {getattr(model, 'model_name', type(model).__name__)} needs "
            f"H and W to be multiples of {multiple}"
        )
    model_spec = preprocess.replace(height=h, width=w, dtype="float32", layout="nchw")
    onnx_spec = model_spec.replace(dtype="uint8", layout="nhwc") if preset.uint8_input else model_spec
    if preset.frame_size is not None:
        onnx_spec = frame_input_spec(model_spec, preset.frame_size)
    return model_spec, onnx_spec


def frame_input_spec(model_spec: PreprocessSpec, frame_hw: tuple[int, int]) -> PreprocessSpec:
    """The input spec of a graph that takes camera frames: BGR uint8 NHWC of `frame_hw`, passed as they are.

    core.preprocess then only stretches a frame of another size to `frame_hw` (a dataset frame becomes the
    camera's); mean/std are the model's, listed in the BGR order of the graph's input.
    """
    bgr = (lambda v: tuple(v)[::-1]) if model_spec.channel_order == "rgb" else tuple
    return model_spec.replace(
        height=frame_hw[0],
        width=frame_hw[1],
        channel_order="bgr",
        mean=bgr(model_spec.mean),
        std=bgr(model_spec.std),
        resize="stretch",
        dtype="uint8",
        layout="nhwc",
    )


def build_module(model, model_spec: PreprocessSpec, preset: ExportPreset, num_classes: int):
    """The module to export (wrapped, static pools) and an example input of the exported spec."""
    import torch

    from .wrappers import static_adaptive_pools, wrap_for_export

    if preset.argmax == "uint8" and num_classes > 256:
        raise VssegError(f"--argmax uint8: the model has {num_classes} classes; use --argmax int32")
    batch = 2 if preset.dynamic_batch else 1  # batch 1 would be specialised by torch.export
    example = torch.zeros(model_spec.input_shape(batch))
    if preset.static_pools:
        model, _ = static_adaptive_pools(model, example[:1])
    module = wrap_for_export(
        model, model_spec, uint8_input=preset.uint8_input, argmax=preset.argmax, frame_size=preset.frame_size
    )
    if preset.uint8_input:
        h, w = preset.frame_size or model_spec.size
        example = torch.zeros((batch, h, w, 3), dtype=torch.uint8)
    return module, example


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' progress prints, warnings and log lines (failures still raise)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def torch_export(module, example, preset: ExportPreset):
    """Export to an in-memory onnx.ModelProto with the preset's exporter, opset and batch dimension."""
    import onnx
    import torch

    out_name = preset.output
    with _quiet():
        if preset.exporter == "dynamo":
            shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if preset.dynamic_batch else None
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                opset_version=preset.opset,
                input_names=[INPUT_NAME],
                output_names=[out_name],
                dynamic_shapes=shapes,
                optimize=True,
                verbose=False,
            )
            return program.model_proto
        buf = io.BytesIO()
        axes = {INPUT_NAME: {0: "batch"}, out_name: {0: "batch"}} if preset.dynamic_batch else None
        torch.onnx.export(
            module,
            (example,),
            buf,
            dynamo=False,
            opset_version=preset.opset,
            input_names=[INPUT_NAME],
            output_names=[out_name],
            dynamic_axes=axes,
            do_constant_folding=True,
        )
        return onnx.load_from_string(buf.getvalue())


def finish_graph(proto, preset: ExportPreset, where: str):
    """Simplify (unless disabled), check, and verify the opset and the boundary types."""
    if preset.simplify:
        proto = graph.simplify(proto, where)
    graph.check(proto, where)
    if graph.opset_of(proto) != preset.opset:
        raise VssegError(
            f"{where}: the {preset.exporter} exporter produced opset {graph.opset_of(proto)}, "
            f"not the requested {preset.opset}; try --opset {graph.opset_of(proto)}"
        )
    graph.check_boundary_dtypes(proto, where)
    return proto


def exporter_name(preset: ExportPreset) -> str:
    import torch

    kind = "dynamo (torch.export)" if preset.exporter == "dynamo" else "torchscript (legacy)"
    return f"torch.onnx.export {kind}, torch {torch.__version__}"


def export_onnx(
    model,
    out: str | Path,
    *,
    model_name: str,
    classes: list[str],
    preprocess: PreprocessSpec,
    preset: ExportPreset,
    parent: str | Path | None = None,
    palette: list | None = None,
    quantization: dict | None = None,
    target: str = "trt",
) -> ExportResult:
    """Export `model` (float NCHW in, N×C×H×W logits out) to `out` with its manifest, or leave no file.

    `preprocess` is the checkpoint's preprocessing; the manifest records the exported graph's own input
    spec (the export size; uint8 NHWC when `preset.uint8_input`) and output kind (logits | labels).
    `quantization` (a QAT checkpoint's record) makes it an INT8 Q/DQ export for `target` (see the module doc).
    """
    import onnx

    out = check_output_path(out, inputs=[parent], need_bytes=weight_bytes(model) + MANIFEST_BYTES)
    t0 = time.perf_counter()
    model = model.eval()
    if quantization is not None:
        from ..train.quant import freeze_weight_scales

        freeze_weight_scales(model)
    model_spec, onnx_spec = export_sizes(model, preprocess, preset)
    # the parity frames are read before exporting: a bad --parity-frames fails at once, not after the export
    frames, source = load_frames(preset.parity_frames, preset.parity_count, onnx_spec.size)
    if preset.frame_size is not None:  # the camera's frames: both sides start from the same frame
        frames = [resize_frame(f, onnx_spec) for f in frames]
    frames_s = time.perf_counter() - t0  # counted with the parity check in the timings
    module, example = build_module(model, model_spec, preset, len(classes))
    proto = torch_export(module, example, preset)
    t1 = time.perf_counter()
    proto = finish_graph(proto, preset, str(out))
    structure, unsigned = None, []
    if quantization is not None:
        if target == "ort":  # uint8 activations, and uint8 weights where onnxruntime runs integer kernels (exact)
            from ..onnx_graph import shift_activations_to_uint8, unsigned_integer_kernels

            proto, unsigned = unsigned_integer_kernels(shift_activations_to_uint8(proto))
        structure = _qat_structure(proto, target, str(out))
    t2 = time.perf_counter()
    with atomic_path(out, "--out") as tmp:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        report = check_parity(
            tmp,
            model,
            frames,
            source,
            model_spec=model_spec,
            onnx_spec=onnx_spec,
            output=preset.output,
            batched=preset.dynamic_batch,
            max_abs_logit=preset.max_abs_logit,
            min_argmax_agreement=preset.min_argmax_agreement,
            exact_qdq=quantization is not None,
        )
        if not report.passed:
            raise VssegError(f"{out}: parity check failed, nothing written: {report.describe()}")
        t3 = time.perf_counter()
        summary = graph.summary(proto)
        timings = {
            "export_s": round(t1 - t0 - frames_s, 3),
            "simplify_check_s": round(t2 - t1, 3),
            "parity_s": round(t3 - t2 + frames_s, 3),
            "total_s": round(t3 - t0, 3),
        }
        qat = (
            {}
            if quantization is None
            else {
                "target": target,
                "structure": structure.to_dict(),
                "parity_arithmetic": "exact Q/DQ (onnxruntime without graph optimisation), against torch's fake INT8",
                "quantization": {
                    "quantizer": "vsseg-edge QAT (torch fake quantisation, exported Q/DQ)",
                    **quantization,
                    **({"uint8_weights": unsigned} if target == "ort" else {}),
                },
                "calibration": {"method": "qat", "frames": "the training run's (see the parent checkpoint's config)"},
                "gate": {
                    "result": None,
                    "skipped": "QAT export: the model was trained against its FP32 teacher; "
                    "judge it with vsseg-edge bench (mIoU, TC, agreement)",
                },
            }
        )
        # the manifest before the rename: when it cannot be written, no model is left without one
        manifest = write_manifest(
            out,
            "qdq_onnx" if qat else "onnx",
            model=model_name,
            classes=list(classes),
            palette=palette,
            preprocess=onnx_spec,
            output=preset.output,
            precision="int8" if qat else "fp32",
            parent=parent,
            content=tmp,
            opset=summary["opset"],
            exporter=exporter_name(preset),
            simplified=preset.simplify,
            dynamic_batch=preset.dynamic_batch,
            parity=report.to_dict(),
            graph=summary,
            export_preset=preset.to_dict(),
            source_preprocess=preprocess.to_dict(),
            timings=timings,
            **({"graph_preprocess": graph_preprocess(model_spec, onnx_spec)} if preset.frame_size else {}),
            **qat,
        )
    return ExportResult(out, manifest, report, summary, timings)


def _qat_structure(proto, target: str, where: str):
    """The Q/DQ structure report of a QAT export for `target`; a one-line error when a rule is broken."""
    from ..onnx_graph import check_qdq_structure

    rep = check_qdq_structure(proto, target)
    if not rep.ok:
        raise VssegError(
            f"{where}: QAT export is not a valid {target} Q/DQ model, nothing written: {'; '.join(rep.problems[:3])}"
        )
    return rep


def graph_preprocess(model_spec: PreprocessSpec, onnx_spec: PreprocessSpec) -> dict:
    """What a camera-frame graph does inside, for the manifest (its input spec says what it takes)."""
    return {
        "frame_size": list(onnx_spec.size),
        "resize_to": list(model_spec.size),
        "interpolation": model_spec.interpolation,
        "channel_order": model_spec.channel_order,
        "normalised_as": model_spec.to_dict(),
    }


def export_checkpoint(
    ckpt_path: str | Path, out: str | Path, preset: ExportPreset, target: str | None = None
) -> ExportResult:
    """Load a vsseg-edge checkpoint (model, classes, preprocessing) and export it with `preset`; a QAT
    checkpoint becomes an INT8 Q/DQ model for `target` ("trt" by default, or "ort")."""
    from ..models.checkpoint import checkpoint_preprocess, model_from_checkpoint

    check_output_path(out, inputs=[ckpt_path])
    if target not in (None, "trt", "ort"):
        raise VssegError(f"--target {target}: expected trt (TensorRT) or ort (onnxruntime on a CPU)")
    model, ckpt = model_from_checkpoint(ckpt_path)
    quantization = ckpt.get("quantization")
    if target is not None and quantization is None:
        raise VssegError(
            f"{ckpt_path}: --target is for checkpoints trained with fake INT8 (quant.enabled); "
            "an FP32 checkpoint exports to FP32 ONNX, then vsseg-edge calibrate makes the INT8 model"
        )
    return export_onnx(
        model,
        out,
        model_name=ckpt["model"],
        classes=ckpt["classes"],
        palette=ckpt.get("palette"),
        preprocess=checkpoint_preprocess(ckpt, str(ckpt_path)),
        preset=preset,
        parent=ckpt_path,
        quantization=quantization,
        target=target or "trt",
    )
