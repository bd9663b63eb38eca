"""Per-channel ranges of the tensors that given convolutions read (FP32 model, every 20th pandaset frame).

A per-tensor activation scale is set by the widest channel; channels with a much narrower range are quantised
with few levels. This prints, for each convolution's input: the tensor's 99.999th percentile of |x| (about what
the percentile calibration picks), the per-channel percentiles (median, min, max) and how many channels stay
below 1/16 of the tensor's range (fewer than 8 int8 steps).

    python benchmarks/experiments/int8_ranges.py runs/int8_tc/cityscapes/espnet-cityscapes.onnx \
        node_Conv_300,node_Conv_312,node_Conv_318,node_Conv_306
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import onnx

from vsseg_edge.core.fileio import read_image
from vsseg_edge.core.manifest import manifest_preprocess, read_manifest
from vsseg_edge.core.preprocess import preprocess_batch
from vsseg_edge.onnx_graph import with_outputs
from vsseg_edge.runtime.backends.ort import ort_session

SHARED = Path(os.environ.get("VSSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("convs", help="comma-separated Conv node names")
    ap.add_argument("--frames", default=str(SHARED / "video" / "pandaset_sf_front"))
    ap.add_argument("--every", type=int, default=20)
    args = ap.parse_args(argv)
    model, names = Path(args.model), args.convs.split(",")
    proto = onnx.load(str(model))
    nodes = {n.name: n for n in proto.graph.node}
    inputs = [nodes[n].input[0] for n in names]
    spec = manifest_preprocess(read_manifest(model), str(model))
    sess = ort_session(with_outputs(proto, inputs), threads=1)
    frames = sorted(Path(args.frames).glob("*.jpg"))[:: args.every]
    outs = [sess.run(inputs, {sess.get_inputs()[0].name: preprocess_batch([read_image(f)], spec)}) for f in frames]
    print(f"{model.name}, {len(frames)} frames of {args.frames}")
    for i, (name, t) in enumerate(zip(names, inputs)):
        x = np.concatenate([o[i] for o in outs], 0)  # N, C, H, W
        per_channel = np.percentile(np.abs(x).transpose(1, 0, 2, 3).reshape(x.shape[1], -1), 99.999, axis=1)
        tensor = float(np.percentile(np.abs(x), 99.999))
        print(
            f"{name}: reads {t} ({x.shape[1]} channels): tensor p99.999 |x| {tensor:.2f}; per channel median "
            f"{np.median(per_channel):.3f}, min {per_channel.min():.3f}, max {per_channel.max():.2f}; "
            f"{int((per_channel < tensor / 16).sum())} channels below 1/16 of the tensor's range"
        )


if __name__ == "__main__":
    main()
