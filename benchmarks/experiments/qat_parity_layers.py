"""Where a QAT export's parity goes: each convolution's int8 input, torch's fake INT8 vs the exported Q/DQ ONNX
under exact Q/DQ arithmetic (onnxruntime, no graph optimisation), on one pandaset frame.

For each quantised convolution (in graph order): the largest difference of its dequantised input, the input's
int8 step, the share of input elements more than half a step apart, and the largest output difference.

    python benchmarks/experiments/qat_parity_layers.py runs/train/cityscapes_espnet_qat_short/model.pt
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from vsseg_edge.core.fileio import read_image
from vsseg_edge.core.manifest import manifest_preprocess, read_manifest
from vsseg_edge.core.preprocess import labels_from_output, preprocess_batch
from vsseg_edge.export.onnx_export import build_module, export_sizes, finish_graph, torch_export
from vsseg_edge.export.presets import ExportPreset
from vsseg_edge.models.checkpoint import model_from_checkpoint
from vsseg_edge.onnx_graph import with_outputs
from vsseg_edge.runtime.backends.ort import ort_session
from vsseg_edge.train.quant import freeze_weight_scales, quantized_modules

SHARED = Path(os.environ.get("VSSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--frame", default=str(SHARED / "video" / "pandaset_sf_front" / "00.jpg"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model, _ = model_from_checkpoint(args.checkpoint)
    model.eval()
    freeze_weight_scales(model)
    preset = ExportPreset()
    spec = manifest_preprocess(read_manifest(args.checkpoint), args.checkpoint)
    model_spec, _ = export_sizes(model, spec, preset)
    module, example = build_module(model, model_spec, preset, len(read_manifest(args.checkpoint)["classes"]))
    proto = finish_graph(torch_export(module, example, preset), preset, args.checkpoint)
    x = preprocess_batch([read_image(args.frame)], model_spec)
    captured = []
    for _, m in quantized_modules(model):
        m.register_forward_hook(
            lambda m, inp, out: captured.append(
                (m.quant_input(inp[0]).detach().numpy(), out.detach().numpy(), float(m.input_amax))
            )
        )
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    convs = [n for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    names = list(dict.fromkeys(t for n in convs for t in (n.input[0], n.output[0])))
    sess = ort_session(with_outputs(proto, names), threads=1, exact_qdq=True)
    res = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x})))
    final = res[sess.get_outputs()[0].name]
    agreement = (labels_from_output(final, "logits") == labels_from_output(ref, "logits")).mean() * 100
    print(f"logits: max |Δ| {np.abs(final - ref).max():.3g}, argmax agreement {agreement:.3f} %")
    for i, (node, (tin, tout, amax)) in enumerate(zip(convs, captured)):
        oin, oout = res[node.input[0]], res[node.output[0]]
        step = amax / 127
        off = (np.abs(oin - tin) > step / 2).mean() * 100
        print(
            f"{i:2d} {node.name}: input max |Δ| {np.abs(oin - tin).max():.3g} (step {step:.3g}), "
            f"{off:.4f} % of elements a step or more apart; output max |Δ| {np.abs(oout - tout).max():.3g}"
        )


if __name__ == "__main__":
    main()
