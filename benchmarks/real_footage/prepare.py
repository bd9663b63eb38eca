"""Lay out the real footage of the temporal fine-tuning experiments (no file is copied into the repository).

    runs/real/train/<clip>/   the first 75 % of each training clip's frames   (the temporal loss trains here)
    runs/real/val/<clip>/     the last 25 % of the same clips, held out in time (settings are chosen here)
    runs/real/test/           whole clips never trained on                     (the reported TC)

Training clips: the freeway at sunset of ../shared/data/video (Apache-2.0) and Udacity's
`test_videos/solidWhiteRight.mp4` (udacity/CarND-LaneLines-P1, MIT). Test clips: the PandaSet San Francisco
street of ../shared/data/video (CC BY 4.0, "PandaSet by Hesai and Scale") and Udacity's `test_video.mp4`
(udacity/CarND-Vehicle-Detection, MIT). Download the two Udacity files from those repositories and pass
them with --udacity-lanes / --udacity-vehicles.

Every clip is written as a folder of PNG frames resized to --width pixels wide (640: INTER_AREA, aspect kept),
read through the video dataset (video files decoded by it). The models run at 360x480 (CamVid) or 512x1024
(Cityscapes) whatever the footage, and DIS flow and TC at 640 px cost a tenth of what 1920x1080 costs on a
CPU; TC figures are therefore at 640 px wide (the report says so). Usage:

    python benchmarks/real_footage/prepare.py --shared ../shared/data --udacity-lanes solidWhiteRight.mp4 \\
        --udacity-vehicles test_video.mp4 --out runs/real
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2

from vsseg_edge.core.fileio import read_image, write_png
from vsseg_edge.data.datasets import open_dataset

TRAIN_FRACTION = 0.75


def clip_frames(source: Path) -> list[Path]:
    """The frames of a video file or frame folder, in order (video files decoded once by the dataset)."""
    ds = open_dataset(source, kind="video")
    return [r.image for r in next(iter(ds.sequences.values()))]


def write_frames(frames: list[Path], folder: Path, width: int) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i, path in enumerate(frames):
        img = read_image(path)
        h = int(round(img.shape[0] * width / img.shape[1] / 2)) * 2
        write_png(folder / f"{i:06d}.png", cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA))


def split_in_time(clip_name: str, source: Path, out: Path, width: int) -> dict:
    """The first TRAIN_FRACTION of the frames into out/train/<clip>, the rest into out/val/<clip>."""
    frames = clip_frames(source)
    cut = int(round(len(frames) * TRAIN_FRACTION))
    write_frames(frames[:cut], out / "train" / clip_name, width)
    write_frames(frames[cut:], out / "val" / clip_name, width)
    return {"clip": clip_name, "frames": len(frames), "train": cut, "val": len(frames) - cut}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--udacity-lanes", type=Path, required=True, help="CarND-LaneLines-P1 solidWhiteRight.mp4")
    ap.add_argument("--udacity-vehicles", type=Path, required=True, help="CarND-Vehicle-Detection test_video.mp4")
    ap.add_argument("--out", type=Path, default=Path("runs/real"))
    ap.add_argument("--width", type=int, default=640)
    args = ap.parse_args()
    out = args.out
    for name, video in (("cosmos_highway_sunset", args.shared / "video" / "cosmos_highway_sunset.mp4"),
                        ("udacity_solidWhiteRight", args.udacity_lanes)):
        print(split_in_time(name, video, out, args.width))
    for name, source in (("pandaset_sf_front", args.shared / "video" / "pandaset_sf_front"),
                         ("udacity_vehicle_test_video", args.udacity_vehicles)):
        frames = clip_frames(source)
        write_frames(frames, out / "test" / name, args.width)
        print({"clip": name, "frames": len(frames), "test": len(frames)})


if __name__ == "__main__":
    main()
