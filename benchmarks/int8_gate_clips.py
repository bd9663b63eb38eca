"""Two round-6 measurements of benchmarks/reports/int8_tc.md on the gate clips (cosmos frames 131–154 and the clips
given with --gate-clip; never the held-out clips), with each TC drop's 90 % interval and bound:

- `percentile`: the onnxruntime preset of round 5 (ModelOpt's Q/DQ, 7-bit weights on integer kernels) at the 99.99th
  and 99.999th percentile, no search, calibrated on cosmos frames 0–130, the clips pooled (point 7);
- `qat-snapshots`: every exported snapshot of the QAT runs in WORK/qat/ (point 8);
- `wide` (round 7): every INT8 file of WORK/KEY on each given clip on its own (the validation clips of the real
  footage, never the held-out ones), to see whether any clip a user could gate on predicts the held-out verdicts;
  writes WORK/KEY/gate_wide.json (files already there are not measured again);
- `scores-float` (round 7): WORK/KEY/diag_ptq_trt_scores_float — `ptq_trt` with the decoder's upsamplings of the
  class-score maps (transposed convolutions reading as many channels as the model has classes) in float — then
  `wide`: does quantising the score maps flip the thin classes?
- `class-float` (round 8) became `vsseg-edge calibrate --protect-classes` in round 9 (calib/protect.py; the
  script's version, which picked the frames by sign pixels alone, is in git at e77a4e2);
- `table` (round 7): from gate_wide.json and the model's held-out figures (WORK/KEY.json), each file's TC drop on
  the gate clips and the held-out clips, its mean, spread and the clips over 1 point, and how well the gate clips
  rank the held-out verdicts (Spearman's ρ of the gate figures against the worst held-out drop).

    python benchmarks/int8_gate_clips.py percentile --work runs/int8_tc_r2 --key camvid_tc \
        --gate-clip runs/real/val/udacity_solidWhiteRight
    python benchmarks/int8_gate_clips.py qat-snapshots --work runs/int8_tc_r2 --key camvid_tc \
        --gate-clip runs/real/val/udacity_solidWhiteRight
    python benchmarks/int8_gate_clips.py wide --work runs/int8_tc --key camvid \
        --gate-clip runs/real/val/udacity_solidWhiteRight --gate-clip runs/real/val/pandaset_002_back ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import int8_tc  # its sibling (python puts the script's folder first on the path): data, FP32 exports, the judge


def scores_in_float(src: Path, stem: Path) -> Path:
    """`src` with its quantised transposed convolutions that read class-score maps (as many input channels as the
    model has classes, or one more: ESPNet CamVid scores a void map it does not output) kept in float."""
    import onnx

    from vsseg_edge.core.hashcache import file_sha256
    from vsseg_edge.onnx_graph import keep_in_float, qdq_candidates, tensor_producers

    model = onnx.load(str(src))
    man = json.loads(Path(str(src) + ".json").read_text())
    inits, producers = {i.name: i for i in model.graph.initializer}, tensor_producers(model.graph)

    def weight_in_channels(node) -> int:
        w = node.input[1]
        while w not in inits:  # the weight behind its QuantizeLinear → DequantizeLinear
            w = producers[w].input[0]
        return int(inits[w].dims[0])  # ConvTranspose weights are (in, out / groups, kH, kW)

    n, quantised = len(man["classes"]), set(qdq_candidates(model))
    score_readers = [
        node.name
        for node in model.graph.node
        if node.op_type == "ConvTranspose" and node.name in quantised and weight_in_channels(node) in (n, n + 1)
    ]
    int8_tc.log(f"kept in float (class-score maps): {score_readers}")
    out = stem.with_suffix(".int8.qdq.onnx")
    onnx.save(keep_in_float(model, score_readers), str(out))
    man = {**man, "sha256": file_sha256(out), "diagnostic": f"{src.name}, score maps in float: {score_readers}"}
    Path(str(out) + ".json").write_text(json.dumps(man, indent=1))
    return out


HELD_OUT = ("pandaset", "cosmos_b", "udacity_vehicle_test_video")


def ten_clips_table(work: Path, key: str) -> list[str]:
    """Markdown rows: every file measured on the gate clips (gate_wide.json) and on the held-out clips."""
    import numpy as np

    wide = json.loads((work / key / "gate_wide.json").read_text())
    held = json.loads((work / f"{key}.json").read_text())
    clips = list(wide["clips"])
    rows = [
        "| file | "
        + " | ".join(f"`{c}`" for c in clips)
        + " | "
        + " | ".join(f"**{h}**" for h in HELD_OUT)
        + " | mean [sd] of the 10 | clips > 1 |",
        "|---|" + "---|" * (len(clips) + len(HELD_OUT) + 2),
    ]
    gate_worst, gate_mean, held_worst = [], [], []
    for name, by_clip in sorted(wide["variants"].items()):
        h = [held.get(name, {}).get("tc", {}).get(c, {}).get("drop") for c in HELD_OUT]
        if None in h:
            continue
        g = [by_clip[c]["drop"] for c in clips]
        both = np.array(g + h)
        rows.append(
            f"| `{name}` | "
            + " | ".join(f"{x:.2f}" for x in g)
            + " | "
            + " | ".join(f"**{x:.2f}**" for x in h)
            + f" | {both.mean():.2f} [{both.std(ddof=1):.2f}] | {int((both > 1.0).sum())} of {len(both)} |"
        )
        gate_worst.append(max(g))
        gate_mean.append(float(np.mean(g)))
        held_worst.append(max(h))

    def rho(a, b) -> float:
        ranks = [np.argsort(np.argsort(x)) for x in (a, b)]
        return float(np.corrcoef(*ranks)[0, 1])

    rows.append(
        f"\nSpearman's ρ against the worst held-out drop, over these {len(held_worst)} files: the worst gate clip "
        f"{rho(gate_worst, held_worst):.2f}, the mean of the gate clips {rho(gate_mean, held_worst):.2f}."
    )
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["percentile", "qat-snapshots", "wide", "scores-float", "table"])
    ap.add_argument("--work", required=True)
    ap.add_argument("--key", required=True, choices=sorted(int8_tc.MODELS))
    ap.add_argument("--gate-clip", action="append", default=[])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    work = Path(args.work)
    if args.what == "table":
        return print("\n".join(ten_clips_table(work, args.key)))
    if not args.gate_clip:
        ap.error("--gate-clip: at least one")
    wide = args.what in ("wide", "scores-float")
    # the gate-clips folder (cosmos 131–154 and the given clips) is the other parts' gate: `wide` adds no clip to it
    data = int8_tc.prepare_data(work, [] if wide else args.gate_clip)
    fp32 = int8_tc.fp32_onnx(work, args.key)
    if args.what == "percentile":
        for pct in (99.999, 99.99):
            out = work / args.key / "gate_clips_percentile" / f"p{pct:g}.int8.qdq.onnx"
            out.parent.mkdir(parents=True, exist_ok=True)
            int8_tc.calibrated(  # the accuracy gate and the TC gate's verdict are in the log and the manifest
                out,
                fp32,
                data["cosmos_0_130"],
                "ort_cpu.yaml",
                tc_source=data["gate_clips"],
                eval_source=data["camvid"],
                **dict(num_frames=48, threads=args.threads, speed_runs=0, eval_frames=24, eval_split="val"),
                **dict(max_rounds=0, percentile=pct, tc_confidence=0.9, tc_max_frames=120, tc_clip_frames=60),
                **int8_tc.ROUND5_ORT,  # measured with round 5's 7-bit weights, the clips pooled
                tc_per_clip=False,
            )
        return
    if args.what == "scores-float":
        scores_in_float(work / args.key / "ptq_trt.int8.qdq.onnx", work / args.key / "diag_ptq_trt_scores_float")
    if wide:
        clips = {"cosmos_131_154": data["cosmos_gate"]}
        clips.update({Path(c).name: Path(c) for c in args.gate_clip})
        judge = int8_tc.Judge(fp32, clips, args.threads)
        path = work / args.key / "gate_wide.json"
        out = json.loads(path.read_text()) if path.is_file() else {}
        if set(out.get("clips", {})) != set(clips):  # measured on other clips: start again, never mix the two
            out = {"variants": {}}
        out["clips"] = judge.frames_record()
        for model in sorted((work / args.key).glob("*.int8.qdq.onnx")):
            name = model.name.split(".")[0]
            if name not in out["variants"]:
                out["variants"][name] = judge.tc(model)
                tmp = path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(out, indent=1, default=float))
                tmp.replace(path)
        return
    gate = int8_tc.Judge(fp32, {"gate_clips": data["gate_clips"]}, args.threads).gates["gate_clips"]
    for run in sorted((work / "qat").iterdir()):
        for snapshot in sorted(run.glob("*.ort.int8.qdq.onnx")):
            r = gate.measure(snapshot, 1.0, 0.9, per_clip=False)
            print(f"{run.name} {snapshot.name}: drop {r.drop:.2f}, 90 % bound {r.bound:.2f}, {r.agreement:.2f} %")


if __name__ == "__main__":
    main()
