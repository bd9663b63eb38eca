"""Lay out the real footage of the temporal fine-tuning experiments (no file is copied into the repository).

    runs/real/train/<clip>/   the first 75 % of each training clip's frames   (fine-tuning reads only these)
    runs/real/val/<clip>/     the last 25 % of the same clips, held out in time (settings are chosen here)
    runs/real/test/<clip>/    whole clips never trained on                     (the reported TC)

Training clips (urban and highway):
- five cameras of PandaSet sequence 002 (San Francisco, SoMa; 80 frames at 10 Hz each): front_left, left,
  right, back and front_right; CC BY 4.0, "PandaSet by Hesai and Scale". Read from a clone of
  scaleapi/pandaset-devkit at commit c2072973 (`test/data/002/camera/<camera>_camera/NN.jpg`, removed from the
  repository later, still in its history): pass the clone with --pandaset-devkit.
- the freeway at sunset of ../shared/data/video (nvidia-cosmos/cosmos-transfer1, Apache-2.0);
- Udacity's `test_videos/solidWhiteRight.mp4` (udacity/CarND-LaneLines-P1, MIT).
Test clips: the PandaSet front camera of the same sequence (../shared/data/video/pandaset_sf_front, CC BY 4.0:
a camera never trained on, but the same 8 s of the same street that the other five cameras show) and Udacity's
`test_video.mp4` (udacity/CarND-Vehicle-Detection, MIT; a highway never seen in any form). Download the two
Udacity files from those repositories and pass them with --udacity-lanes / --udacity-vehicles.

Every clip is written as a folder of PNG frames resized to --width pixels wide (640: INTER_AREA, aspect kept),
read through the video dataset (video files decoded by it). The models run at 360x480 (CamVid) or 512x1024
(Cityscapes) whatever the footage, and DIS flow and TC at 640 px cost a tenth of what 1920x1080 costs on a
CPU; TC figures are therefore at 640 px wide (the report says so). Usage:

    git clone https://github.com/scaleapi/pandaset-devkit && git -C pandaset-devkit checkout c2072973
    python benchmarks/real_footage/prepare.py --shared ../shared/data --udacity-lanes solidWhiteRight.mp4 \\
        --udacity-vehicles test_video.mp4 --pandaset-devkit pandaset-devkit --out runs/real
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.fileio import read_image, write_png
from vsseg_edge.data.datasets import open_dataset

TRAIN_FRACTION = 0.75
PANDASET_COMMIT = "c2072973"
PANDASET_TRAIN_CAMERAS = ("front_left", "left", "right", "back", "front_right")  # front is the test clip


def clip_frames(source: Path) -> list[Path]:
    """The frames of a video file or frame folder, in order (video files decoded once by the dataset)."""
    ds = open_dataset(source, kind="video")
    return [r.image for r in next(iter(ds.sequences.values()))]


def _resized(img: np.ndarray, width: int) -> np.ndarray:
    h = int(round(img.shape[0] * width / img.shape[1] / 2)) * 2
    return cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA)


def write_frames(frames: list, folder: Path, width: int, timestamps: list[float] | None = None) -> None:
    """Frames (paths or BGR arrays) as folder/000000.png …, with timestamps.json when given."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        img = read_image(frame) if isinstance(frame, (str, Path)) else frame
        write_png(folder / f"{i:06d}.png", _resized(img, width))
    if timestamps is not None:
        (folder / "timestamps.json").write_text(json.dumps(timestamps))


def split_in_time(clip_name: str, frames: list, out: Path, width: int, timestamps: list[float] | None = None) -> dict:
    """The first TRAIN_FRACTION of the frames into out/train/<clip>, the rest into out/val/<clip>."""
    cut = int(round(len(frames) * TRAIN_FRACTION))
    ts = (timestamps[:cut], timestamps[cut:]) if timestamps else (None, None)
    write_frames(frames[:cut], out / "train" / clip_name, width, ts[0])
    write_frames(frames[cut:], out / "val" / clip_name, width, ts[1])
    return {"clip": clip_name, "frames": len(frames), "train": cut, "val": len(frames) - cut}


def pandaset_camera(devkit: Path, camera: str) -> tuple[list[np.ndarray], list[float]]:
    """The 80 frames and timestamps of one camera of sequence 002, read from the devkit clone's history."""
    folder = f"test/data/002/camera/{camera}_camera"

    def show(name: str) -> bytes:
        r = subprocess.run(
            ["git", "-C", str(devkit), "show", f"{PANDASET_COMMIT}:{folder}/{name}"], capture_output=True
        )
        if r.returncode:
            raise VssegError(
                f"{devkit}: no {folder}/{name} at commit {PANDASET_COMMIT} (--pandaset-devkit must be a "
                f"git clone of scaleapi/pandaset-devkit): {r.stderr.decode().strip()}"
            )
        return r.stdout

    timestamps = json.loads(show("timestamps.json"))
    frames = [
        cv2.imdecode(np.frombuffer(show(f"{i:02d}.jpg"), np.uint8), cv2.IMREAD_COLOR) for i in range(len(timestamps))
    ]
    return frames, [float(t) for t in timestamps]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--udacity-lanes", type=Path, required=True, help="CarND-LaneLines-P1 solidWhiteRight.mp4")
    ap.add_argument("--udacity-vehicles", type=Path, required=True, help="CarND-Vehicle-Detection test_video.mp4")
    ap.add_argument(
        "--pandaset-devkit",
        type=Path,
        required=True,
        help=f"a git clone of scaleapi/pandaset-devkit (commit {PANDASET_COMMIT} is read)",
    )
    ap.add_argument("--out", type=Path, default=Path("runs/real"))
    ap.add_argument("--width", type=int, default=640)
    args = ap.parse_args()
    out = args.out
    for camera in PANDASET_TRAIN_CAMERAS:
        frames, ts = pandaset_camera(args.pandaset_devkit, camera)
        print(split_in_time(f"pandaset_002_{camera}", frames, out, args.width, ts))
    for name, video in (
        ("cosmos_highway_sunset", args.shared / "video" / "cosmos_highway_sunset.mp4"),
        ("udacity_solidWhiteRight", args.udacity_lanes),
    ):
        print(split_in_time(name, clip_frames(video), out, args.width))
    for name, source in (
        ("pandaset_sf_front", args.shared / "video" / "pandaset_sf_front"),
        ("udacity_vehicle_test_video", args.udacity_vehicles),
    ):
        frames = clip_frames(source)
        write_frames(frames, out / "test" / name, args.width)
        print({"clip": name, "frames": len(frames), "test": len(frames)})


if __name__ == "__main__":
    main()
