"""Two round-6 measurements of benchmarks/reports/int8_tc.md on the gate clips (cosmos frames 131–154 and the clips
given with --gate-clip; never the held-out clips), with each TC drop's 90 % interval and bound:

- `percentile`: the onnxruntime preset of round 5 (ModelOpt's Q/DQ, 7-bit weights on integer kernels) at the 99.99th
  and 99.999th percentile, no search, calibrated on cosmos frames 0–130, the clips pooled (point 7);
- `qat-snapshots`: every exported snapshot of the QAT runs in WORK/qat/ (point 8);
- `wide` (round 7): every INT8 file of WORK/KEY on each given clip on its own (the validation clips of the real
  footage, never the held-out ones), to see whether any clip a user could gate on predicts the held-out verdicts;
  writes WORK/KEY/gate_wide.json.

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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["percentile", "qat-snapshots", "wide"])
    ap.add_argument("--work", required=True)
    ap.add_argument("--key", required=True, choices=sorted(int8_tc.MODELS))
    ap.add_argument("--gate-clip", action="append", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    work = Path(args.work)
    # the gate-clips folder (cosmos 131–154 and the udacity clip) is the other parts' gate: `wide` adds no clip to it
    data = int8_tc.prepare_data(work, [c for c in args.gate_clip if args.what != "wide" or "udacity" in c])
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
    if args.what == "wide":
        clips = {"cosmos_131_154": data["gate_clips"] / "cosmos_131_154"}
        clips.update({Path(c).name: Path(c) for c in args.gate_clip})
        judge = int8_tc.Judge(fp32, clips, args.threads)
        out = {"clips": judge.frames_record(), "variants": {}}
        for model in sorted((work / args.key).glob("*.int8.qdq.onnx")):
            out["variants"][model.name.split(".")[0]] = judge.tc(model)
        tmp = work / args.key / "gate_wide.json.tmp"
        tmp.write_text(json.dumps(out, indent=1, default=float))
        tmp.replace(tmp.with_suffix(""))
        return
    gate = int8_tc.Judge(fp32, {"gate_clips": data["gate_clips"]}, args.threads).gates["gate_clips"]
    for run in sorted((work / "qat").iterdir()):
        for snapshot in sorted(run.glob("*.ort.int8.qdq.onnx")):
            r = gate.measure(snapshot, 1.0, 0.9, per_clip=False)
            print(f"{run.name} {snapshot.name}: drop {r.drop:.2f}, 90 % bound {r.bound:.2f}, {r.agreement:.2f} %")


if __name__ == "__main__":
    main()
