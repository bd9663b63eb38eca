"""Put a temporally fine-tuned checkpoint into the package's zoo as `<parent>-tc` (maintainers' tool).

The checkpoint is re-saved under vsseg_edge/zoo/models/ with its manifest, its parent set to the zoo model it
was fine-tuned from (so lineage and agreement checks find it), and its trainer state dropped; zoo.json gets
the entry with the figures of the experiment report (TC on held-out clips, CamVid val mIoU — through the
report's class map for a model of another class set —, pixel agreement with the parent) and the commands.

    python benchmarks/real_footage/add_to_zoo.py runs/tft2/fkd1_s0/model.pt --parent espnet-camvid \\
        --report benchmarks/reports/real_footage_temporal.json --run fkd1_s0
    python benchmarks/real_footage/add_to_zoo.py runs/tfc/tl1_s0/model.pt --parent espnet-cityscapes \\
        --report benchmarks/reports/real_footage_temporal_cityscapes.json --run tl1_s0 \\
        --recipe train/cityscapes_espnet_temporal.yaml
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vsseg_edge import zoo
from vsseg_edge.core.preprocess import PreprocessSpec
from vsseg_edge.models.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--parent", required=True, help="the zoo model it was fine-tuned from")
    ap.add_argument("--report", type=Path, required=True, help="temporal_finetune.py's JSON report")
    ap.add_argument("--run", required=True, help="the run's name in the report (e.g. fkd1_s0)")
    ap.add_argument("--recipe", default="train/camvid_espnet_temporal.yaml")
    ap.add_argument("--description", help="the zoo entry's description (default: made from the run's settings)")
    args = ap.parse_args()
    parent = zoo.get(args.parent)
    name = f"{parent.name}-tc"
    ckpt = load_checkpoint(args.checkpoint)
    model, _ = model_from_checkpoint(args.checkpoint)
    target = zoo.ZOO_DIR / "models" / f"{name}.pt"
    save_checkpoint(
        target,
        model,
        model_name=ckpt["model"],
        classes=ckpt["classes"],
        preprocess=PreprocessSpec.from_dict(ckpt["preprocess"]),
        model_kwargs=ckpt["model_kwargs"],
        config=ckpt["config"],
        metrics=ckpt["metrics"],
        step=ckpt["step"],
        parent=parent.path,
    )
    report = json.loads(args.report.read_text())
    run, before = report["runs"][args.run], report["runs"]["before"]
    command = report["meta"]["command"]
    measured = []
    if "miou" in run:
        # a model of another class set is scored on CamVid through a class map: not its own mIoU (the column of
        # `vsseg-edge models`), so it gets its own metric name
        own = parent.classes == "camvid"
        measured.append(
            {
                "metric": "mIoU" if own else "mIoU (mapped)",
                "value": round(run["miou"], 2),
                "before": round(before["miou"], 2),
                "on": "CamVid val (101 frames, 11 classes)"
                if own
                else f"CamVid val (101 frames) with {parent.classes} classes mapped onto CamVid's 11 "
                "(temporal_finetune.py CAMVID_MAPS; the unmapped ones count as wrong)",
                "command": command,
            }
        )
    for split, what in (("val", "held-out time spans of the training clips"), ("test", "the held-out clips")):
        if f"agree_{split}" in run:
            measured.append(
                {
                    "metric": "agreement",
                    "value": round(run[f"agree_{split}"], 2),
                    "on": f"% of pixels labelled as by {parent.name}, {what} (640 px wide)",
                    "command": command,
                }
            )
    for key, tc in run["tc"].items():
        if key.startswith("test/"):
            measured.append(
                {
                    "metric": "TC",
                    "value": round(tc, 2),
                    "before": round(before["tc"][key], 2),
                    "on": f"held-out clip {key[5:]} (640 px wide; DIS flow, nearest warp)",
                    "command": command,
                }
            )
    index = json.loads(zoo.INDEX.read_text())
    # the parent's own TC on the same clips (the "before" of the report)
    kept = [m for m in index["models"][parent.name]["measured"] if m["metric"] != "TC"]
    index["models"][parent.name]["measured"] = kept + [
        {
            "metric": "TC",
            "value": round(tc, 2),
            "on": f"held-out clip {key[5:]} (640 px wide; DIS flow, nearest warp)",
            "command": command,
        }
        for key, tc in before["tc"].items()
        if key.startswith("test/")
    ]
    cfg = ckpt["config"]
    arm = args.run.rsplit("_s", 1)[0]
    overrides = next((r["overrides"] for r in report.get("rows", []) if r.get("arm") == arm), [])
    terms = ", ".join(f"{k} {v:g}" for k, v in cfg["loss"]["weights"].items() if v)
    index["models"][name] = {
        "file": f"models/{name}.pt",
        "architecture": parent.architecture,
        "classes": parent.classes,
        "num_classes": parent.num_classes,
        "input_hw": list(parent.input_hw),
        "source": f"{parent.name} fine-tuned by vsseg-edge on unlabelled video (self-distillation, temporal terms)",
        "licence": parent.licence,
        "description": args.description
        or (
            f"{parent.name} after temporal fine-tuning: {cfg['iterations']} steps, loss weights {terms}, "
            f"teacher {parent.name}, seed {cfg['seed']}; not trained on the held-out clips it is scored on."
        ),
        "parent": parent.name,
        "made_by": " ".join(
            [f"vsseg-edge train {args.recipe} --override seed={cfg['seed']}", *(f"--override {o}" for o in overrides)]
        ),
        "published": None,
        "measured": measured,
    }
    zoo.INDEX.write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {target} ({target.stat().st_size:,} bytes) and the {name} entry of {zoo.INDEX}")


if __name__ == "__main__":
    main()
