"""Quantisation-aware training (QAT) for the INT8 models PTQ does not fix (issue 13, part 3): train, export,
choose on the gate frames, and hand the chosen file to `int8_tc.py`, which judges it on the held-out clips.

Everything is the package's own path — `vsseg-edge train <QAT recipe>` (fake INT8 where TensorRT runs int8,
distillation from the frozen FP32 model, ETC's temporal loss), `vsseg-edge export --target trt|ort --preset
export/qat.yaml` — run on footage no judge sees:

- training footage: frames 0–130 of the cosmos clip (the frames `int8_tc.py` calibrates on) plus any
  `--extra-clips` folders (default: none); never `pandaset_sf_front` or cosmos frames 131–232;
- snapshots every `--keep-every` steps and the calibrated start, `step_000000` (`train.keep_every`; the runs of
  round 4 predate the start's snapshot, which the report measured separately); each is exported for each
  `--targets` flavour;
- **choice, fixed before any score was seen**: on the TC gate's frames (cosmos frames 131–154, never trained or
  calibrated on), the snapshot with the fewest pixels disagreeing with FP32 among those whose TC drop is at most
  1.0 point; when none is, the one with the smallest TC drop. (The same frames `calibrate`'s TC gate uses.)
- the chosen file is copied to `WORK/<key>/qat_<arm>_<target>.int8.qdq.onnx`; then
  `int8_tc.py --work WORK --parts <key> --variants qat_<arm>_<target>` measures it like every PTQ variant.

    python benchmarks/int8_qat.py --work runs/int8_tc --key cityscapes --arm lr1e4 --override optim.lr=0.0001
    python benchmarks/int8_tc.py --work runs/int8_tc --parts cityscapes --variants qat_lr1e4_trt --threads 1

Results (every snapshot's gate figures and the choice) go to `WORK/<key>/qat_<arm>.json`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import int8_tc  # its sibling (python puts the script's folder first on the path): data, judge, FP32 exports

RECIPES = {
    "cityscapes": "train/cityscapes_espnet_qat.yaml",
    "camvid": "train/camvid_espnet_qat.yaml",
    # the trained students, each from its own weights and as its own teacher
    "camvid_tc": "train/camvid_espnet_qat.yaml",
    "cityscapes_tc": "train/cityscapes_espnet_qat.yaml",
}
START = {
    key: [f"model.init_checkpoint={int8_tc.MODELS[key][0]}", f"teacher.checkpoint={int8_tc.MODELS[key][0]}"]
    for key in ("camvid_tc", "cityscapes_tc")
}
GATE = int8_tc.GATE  # cosmos frames [131, 155) of the TC gate (near calibrate's default: cosmos_a's last 24)
TRAIN_FRAMES = GATE[0]  # cosmos frames [0, 131): before the gate's
TC_LIMIT = 1.0


def layout(work: Path, data: dict, extra: list[str], run: str) -> tuple[Path, Path]:
    """WORK/qat_clips/RUN (one folder per clip: cosmos 0–130, the extra clips; one folder per run, so a run trains
    on the clips it was given, not on those an earlier run linked) and WORK/data/cosmos_gate."""
    frames = sorted(data["cosmos_a"].iterdir())
    clips = work / "qat_clips" / run
    int8_tc.frame_folder(clips / "cosmos_0_130", frames[:TRAIN_FRAMES])
    for e in extra:
        link = clips / Path(e).name
        if not link.exists():
            link.symlink_to(Path(e).resolve(), target_is_directory=True)
    return clips, data["cosmos_gate"]


def float_modules(ptq: Path, checkpoint: str) -> list[str]:
    """The torch module names of the convolutions a PTQ model keeps in float (its manifest's `kept_in_float`,
    ONNX node names): the exporter names each weight initializer after its parameter (`<module>.weight`), so
    QAT can start from the placement the PTQ search found (`quant.exclude`) instead of quantising everything."""
    import onnx

    from vsseg_edge.core.manifest import read_manifest
    from vsseg_edge.models.checkpoint import model_from_checkpoint
    from vsseg_edge.zoo import resolve

    kept = set(read_manifest(ptq)["quantization"]["kept_in_float"])
    fp32 = onnx.load(str(int8_tc.fp32_onnx(ptq.parents[1], ptq.parent.name)))
    model, _ = model_from_checkpoint(resolve(checkpoint))
    modules = dict(model.named_modules())
    names = sorted(n.input[1].removesuffix(".weight") for n in fp32.graph.node if n.name in kept)
    if len(names) != len(kept) or any(n not in modules for n in names):
        raise SystemExit(f"{ptq}: cannot name the float convolutions {sorted(kept)} in {checkpoint} ({names})")
    return names


def choose(scores: dict) -> str:
    """The rule of the module doc: fewest disagreeing pixels with TC drop ≤ 1, else the smallest TC drop."""
    ok = {k: s for k, s in scores.items() if s["tc_drop"] <= TC_LIMIT}
    if ok:
        return min(ok, key=lambda k: (100 - ok[k]["agreement"], ok[k]["tc_drop"]))
    return min(scores, key=lambda k: scores[k]["tc_drop"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=str(int8_tc.REPO / "runs" / "int8_tc"))
    ap.add_argument("--key", choices=sorted(RECIPES), default="cityscapes")
    ap.add_argument("--arm", required=True, help="a name for this training run (its settings: --override)")
    ap.add_argument("--override", action="append", default=[], help="recipe override KEY=VALUE (repeatable)")
    ap.add_argument("--iterations", type=int, default=200, help="training steps (the QAT recipes: 200)")
    ap.add_argument("--keep-every", type=int, default=25, help="a snapshot every N steps (the recipes: 25)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--targets", default="trt", help="trt, ort or trt,ort")
    ap.add_argument(
        "--exclude-from",
        default="",
        help="a PTQ model (in WORK/<key>/) whose float convolutions QAT keeps in float too (quant.exclude)",
    )
    ap.add_argument("--extra-clips", nargs="*", default=[], help="more unlabelled clip folders to train on")
    args = ap.parse_args(argv)

    work = Path(args.work)
    data = int8_tc.prepare_data(work)
    run = work / "qat" / f"{args.key}_{args.arm}"
    clips, gate_frames = layout(work, data, args.extra_clips, run.name)
    overrides = [*START.get(args.key, []), *args.override]
    if args.exclude_from:
        names = float_modules(work / args.key / args.exclude_from, int8_tc.MODELS[args.key][0])
        overrides.append("quant.exclude=" + json.dumps(names))
        int8_tc.log(f"kept in float as in {args.exclude_from}: {', '.join(names)}")
    if not (run / "model.pt").is_file():
        int8_tc.cli(
            "train",
            str(int8_tc.REPO / RECIPES[args.key]),
            "--out",
            str(run.parent),
            *[
                x
                for kv in (
                    f"name={run.name}",
                    f"iterations={args.iterations}",
                    f"keep_every={args.keep_every}",
                    f"ckpt_every={args.keep_every}",
                    f"threads={args.threads}",
                    "data.workers=0",
                    f"video.root={clips.resolve()}",
                    *overrides,
                )
                for x in ("--override", kv)
            ],
        )
    fp32 = int8_tc.fp32_onnx(work, args.key)
    judge = int8_tc.Judge(fp32, {"gate": gate_frames}, args.threads)
    out = work / args.key / f"qat_{args.arm}.json"
    res = json.loads(out.read_text()) if out.is_file() else {"arm": args.arm, "overrides": overrides}
    for target in args.targets.split(","):
        scores = res.setdefault(target, {}).setdefault("gate", {})
        for ckpt in sorted(run.glob("step_*.pt")) + [run / "model.pt"]:
            name = ckpt.stem
            if name in scores:
                continue
            onnx = run / f"{name}.{target}.int8.qdq.onnx"
            if not onnx.is_file():
                int8_tc.cli(
                    "export",
                    str(ckpt),
                    "--target",
                    target,
                    "--preset",
                    str(int8_tc.REPO / "export" / "qat.yaml"),
                    "--parity-frames",
                    str(gate_frames),
                    "--out",
                    str(onnx),
                )
            r = judge.tc(onnx)["gate"]
            scores[name] = {
                "tc_drop": r["drop"],
                "tc_drop_common_classes": r["drop_common_classes"],
                "agreement": r["agreement"],
                "file": onnx.name,
            }
            out.write_text(json.dumps(res, indent=1))
        chosen = choose(scores)
        res[target]["chosen"] = chosen
        dest = work / args.key / f"qat_{args.arm}_{target}.int8.qdq.onnx"
        for suffix in ("", ".json"):  # the model and its manifest
            shutil.copyfile(run / (scores[chosen]["file"] + suffix), str(dest) + suffix)
        int8_tc.log(f"{target}: chose {chosen} {scores[chosen]} → {dest}")
        out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
