"""FP32 vs INT8 speed of the onnxruntime-flavour ESPNet files on this CPU, with both weight encodings (round 10).

For each model of an `int8_tc.py` work folder (`--keys`), the FP32 parent, the onnxruntime-flavour file `--variant`
(as calibrated: uint8 weights with zero point 128 on the convolutions onnxruntime runs as integer kernels, the
preset's guard for x86 CPUs without VNNI) and the same model with int8 weights there (what `--override
integer_weights=int8` writes: the fast u8×s8 kernels of VNNI CPUs), made by `calibrate` again with the file's nodes
in float given as `exclude`, the same frames and no search (so the same ranges and the same float nodes; checked).
Each pair timed by `calib.speed.measure_speed` (compute-only, interleaved FP32/INT8 runs, the ratio of the medians),
`--repeats` times, the pairs alternating; onnxruntime's per-op-type profile of the three (`int8_tc.op_profile`); and
the ceiling of round 9's arithmetic on this CPU: every convolution at the gain it shows timed alone in integer
(`int8_tc.conv_microbench`), the rest of the FP32 profile unchanged.

    python benchmarks/int8_speed_cpu.py --work runs/int8_tc \
        --keys camvid:ptq_ort_exact_protect,cityscapes:ptq_ort_exact --threads 2 --runs 12 --repeats 3 \
        --out benchmarks/reports/int8_speed_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import int8_tc  # its sibling: the work folder's layout, op_profile, conv_microbench


def int8_weights_twin(work: Path, key: str, variant: str) -> Path:
    """`variant` again with int8 weights on the integer kernels: its recorded settings, frames and gate frames (so
    the same ranges), its float nodes excluded and no search or protection, so that only the weights' encoding
    differs (checked: the same calibration frames, the same convolutions in float)."""
    import onnx

    from vsseg_edge.calib.config import load_calib_config
    from vsseg_edge.calib.pipeline import calibrate
    from vsseg_edge.core.manifest import read_manifest
    from vsseg_edge.onnx_graph import check_qdq_structure

    src = work / key / f"{variant}.int8.qdq.onnx"
    out = work / key / f"{variant}_w8twin.int8.qdq.onnx"
    man = read_manifest(src)
    if not out.is_file():
        floats = [*man["kept_in_float"], *((man.get("protected") or {}).get("kept_in_float") or [])]
        cfg = {**man["config"], "exclude": [*man["config"]["exclude"], *floats], "integer_weights": "int8"}
        frames, gate = man["calibration"]["frames"]["source"], man["gate"]["frames"]["source"]
        calibrate(
            work / key / f"{int8_tc.MODELS[key][0]}.onnx",
            frames,
            out,
            load_calib_config(None, **{**cfg, "max_rounds": 0, "protect_classes": [], "speed_runs": 0}),
            eval_source=None if gate == frames else gate,
            keep_failed=True,
            log=lambda s: int8_tc.log("   ", s),
        )
    twin = read_manifest(out)
    if twin["calibration"]["frames"]["sha1"] != man["calibration"]["frames"]["sha1"]:
        raise SystemExit(f"{out}: calibrated on other frames than {src}")
    a, b = (check_qdq_structure(onnx.load(str(p)), "ort") for p in (src, out))
    if sorted(a.float_convs) != sorted(b.float_convs):
        raise SystemExit(f"{out}: other convolutions in float than {src}")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--keys", required=True, help="KEY:VARIANT,… (e.g. camvid:ptq_ort_exact_protect)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import cv2

    from vsseg_edge.calib.speed import measure_speed
    from vsseg_edge.core.manifest import manifest_preprocess, read_manifest
    from vsseg_edge.measure import environment

    work = Path(args.work)
    results = {"threads": args.threads, "runs": args.runs, "repeats": args.repeats, "environment": environment()}
    frame = cv2.imread(str(sorted((int8_tc.SHARED / "video" / "pandaset_sf_front").glob("*.jpg"))[0]))
    fp32_facts: dict[str, tuple[dict, list]] = {}  # per model: its FP32 profile and convolutions, measured once
    for item in args.keys.split(","):
        key, variant = item.split(":")
        fp32 = work / key / f"{int8_tc.MODELS[key][0]}.onnx"
        files = {"uint8 weights": work / key / f"{variant}.int8.qdq.onnx"}
        files["int8 weights"] = int8_weights_twin(work, key, variant)
        man = read_manifest(fp32)
        spec = manifest_preprocess(man, str(fp32))
        entry = {"variant": variant, "input": [spec.height, spec.width], "pairs": {}, "profile": {}}
        for r in range(args.repeats):
            for name in list(files)[:: 1 if r % 2 == 0 else -1]:
                s = measure_speed(
                    fp32, files[name], spec, frame, runs=args.runs, threads=args.threads, classes=man["classes"]
                )
                entry["pairs"].setdefault(name, []).append(s)
                int8_tc.log(f"{key} {name}: FP32 {s['fp32_ms']:.1f} ms, INT8 {s['int8_ms']:.1f} ms, {s['ratio']}×")
        entry["ratio_median"] = {n: statistics.median(p["ratio"] for p in v) for n, v in entry["pairs"].items()}
        # the ceiling (round 9's arithmetic, on this CPU): the FP32 profile with its convolutions' time replaced by
        # theirs as onnxruntime's QLinearConv (u8 x s8), each timed alone (int8_tc.conv_microbench); nothing else
        # faster, no Q/DQ cost. Alone, the float convolutions take longer than inside the graph (no fused layout), so
        # the gain against them is given too but not used
        if key not in fp32_facts:
            fp32_facts[key] = (int8_tc.op_profile(fp32, args.threads), int8_tc.conv_microbench(fp32, args.threads))
        entry["profile"]["fp32"], entry["convs"] = fp32_facts[key]
        for name, path in files.items():
            entry["profile"][name] = int8_tc.op_profile(path, args.threads)
        int8_tc.log(f"{key} profiles: {entry['profile']}")
        total, conv = entry["profile"]["fp32"]["total_ms"], entry["profile"]["fp32"]["ms"].get("Conv", 0.0)
        alone32, alone8 = (sum(r[k] for r in entry["convs"]) for k in ("fp32_ms", "int8_ms"))
        entry["ceiling"] = {
            "conv_share": round(conv / total, 3),
            "conv_ms_in_graph": conv,
            "qlinearconv_ms_alone": round(alone8, 2),
            "float_conv_ms_alone": round(alone32, 2),
            "ratio": round(total / (total - conv + alone8), 3),
        }
        int8_tc.log(f"{key} ceiling: {entry['ceiling']}")
        results[item] = entry
    Path(args.out).write_text(json.dumps(results, indent=1, default=float) + "\n")
    for item in args.keys.split(","):
        print(item, results[item]["ratio_median"], results[item]["ceiling"])


if __name__ == "__main__":
    main()
