"""`generate`: render the synthetic street-scene video set to disk in the Cityscapes layout.

Layout under the output folder (every frame labelled, exact flow for every consecutive pair):

    leftImg8bit_sequence/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png      BGR image
    gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png               Cityscapes ids
    gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelTrainIds.png          trainIds, 255 ignore
    flow/{split}/{city}/{city}_{seq:06d}_{frame:06d}_flow_fw.png    frame → frame+1 (KITTI PNG, NaN invalid)
    flow/{split}/{city}/{city}_{seq:06d}_{frame:06d}_flow_bw.png    frame+1 → frame, under frame's name
    synth.json

Sequences are grouped into cities of SEQS_PER_CITY; train and val cities are drawn from disjoint seeds.
Each sequence is rendered independently from its own seeds, so the bytes do not depend on `workers`.

The output folder must be empty (or new): a set written over another with other parameters would keep
frames that its synth.json does not describe. `overwrite=True` first removes what a generator writes
(`GENERATED`) and nothing else. A generation that fails (a full disk, Ctrl-C) removes what it wrote, so
no partial set without its synth.json is left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ...core.errors import VssegError
from ...core.fileio import check_output, write_json, write_png
from ...core.labels import CITYSCAPES, cityscapes_train_ids_to_ids
from ..flowio import write_flow
from .scene import FPS

GENERATOR, VERSION = "vsseg_edge.data.synth", 1
SEQS_PER_CITY = 4
GENERATED = ("leftImg8bit_sequence", "gtFine", "flow", "flow_cache", "synth.json")  # what a set's folder holds
SERIAL_BELOW = 4_000_000  # pixels x frames under which worker processes cost more than they save
CLASSES_DRAWN = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "motorcycle",
    "bicycle",
)


@dataclass(frozen=True)
class SequenceJob:
    root: str
    split: str
    city: str
    city_seed: int
    seq: int
    frames: int
    height: int
    width: int
    nuisances: bool


def frame_stem(city: str, seq: int, frame: int) -> str:
    return f"{city}_{seq:06d}_{frame:06d}"


def plan(seed: int, num_train: int, num_val: int) -> list[tuple[str, str, int, int]]:
    """(split, city name, city seed, sequence index) of every sequence; train and val cities never share a seed."""
    out = []
    for split_idx, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        for s in range(count):
            k = s // SEQS_PER_CITY
            city_seed = int(np.random.SeedSequence([seed, split_idx, k]).generate_state(1)[0])
            out.append((split, f"synth{seed}{split[0]}{k:02d}", city_seed, s % SEQS_PER_CITY))
    return out


def generate(
    out_dir,
    *,
    num_train: int = 16,
    num_val: int = 4,
    frames: int = 30,
    height: int = 256,
    width: int = 512,
    seed: int = 0,
    workers: int | None = None,
    nuisances: bool = True,
    progress: Callable[[int], None] | None = None,
    overwrite: bool = False,
) -> Path:
    """Render the synthetic set into `out_dir` (created, or empty; `overwrite` replaces a set there) and return it.

    `nuisances=False` writes the clean renders (no flicker, blur, noise or JPEG), e.g. to check the flow
    photometrically; `progress(n)` is called after each sequence with its n frames.
    """
    made = not Path(out_dir).exists()
    root = _check_args(out_dir, num_train, num_val, frames, height, width, seed, workers)
    _clear(root, overwrite)
    jobs = [
        SequenceJob(str(root), split, city, cs, seq, frames, height, width, nuisances)
        for split, city, cs, seq in plan(seed, num_train, num_val)
    ]
    try:
        _render(jobs, min(workers or os.cpu_count() or 1, len(jobs)), frames, height, width, progress)
        write_json(root / "synth.json", _description(seed, num_train, num_val, frames, height, width, nuisances, jobs))
    except BaseException:
        _remove_generated(root)
        if made:
            with contextlib.suppress(OSError):
                root.rmdir()
        raise
    return root


def _render(jobs, workers: int, frames: int, height: int, width: int, progress) -> None:
    if workers <= 1 or len(jobs) * frames * height * width < SERIAL_BELOW:
        for job in jobs:
            _notify(progress, write_sequence(job))
        return
    import multiprocessing

    with ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
    ) as pool:
        try:
            for fut in as_completed([pool.submit(write_sequence, job) for job in jobs]):
                _notify(progress, fut.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # no sequence is still being written at cleanup
            raise


def _clear(root: Path, overwrite: bool) -> None:
    """Refuse a folder that is not empty; with `overwrite`, remove a previous set's files (only those)."""
    entries = sorted(p.name for p in root.iterdir())
    if not entries:
        return
    if not overwrite:
        what = "a synthetic set" if "synth.json" in entries else f"{len(entries)} entries, e.g. {entries[0]}"
        raise VssegError(
            f"--out {root}: not empty ({what}); pass --overwrite to replace the set, or choose a new folder"
        )
    _remove_generated(root)


def _remove_generated(root: Path) -> None:
    for name in GENERATED:
        p = root / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink(missing_ok=True)


def _notify(progress, n):
    if progress is not None:
        progress(n)


def _init_worker():
    import cv2

    cv2.setNumThreads(1)


def _check_args(out_dir, num_train, num_val, frames, height, width, seed, workers) -> Path:
    for name, value, least in (
        ("num_train", num_train, 0),
        ("num_val", num_val, 0),
        ("frames", frames, 2),
        ("height", height, 16),
        ("width", width, 16),
        ("seed", seed, 0),
    ):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise VssegError(f"synthetic data: {name} must be an integer >= {least}, got {value!r}")
    if num_train + num_val == 0:
        raise VssegError("synthetic data: nothing to generate (num_train and num_val are both 0)")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise VssegError(f"synthetic data: workers must be a positive integer or None, got {workers!r}")
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise VssegError(f"{root}: output folder is an existing file; expected a folder (or a new path)")
    check_output(root, "--out", folder=True)
    root.mkdir(parents=True, exist_ok=True)
    return root


def write_sequence(job: SequenceJob) -> int:
    """Render one sequence and write its images, labels and flows; returns the number of frames."""
    from .sequence import render_sequence

    root = Path(job.root)
    img_dir, gt_dir, flow_dir = (
        root / top / job.split / job.city for top in ("leftImg8bit_sequence", "gtFine", "flow")
    )
    for item in render_sequence(job.city_seed, job.seq, job.frames, job.height, job.width, job.nuisances):
        stem = frame_stem(job.city, job.seq, item.index)
        write_png(img_dir / f"{stem}_leftImg8bit.png", item.bgr)
        write_png(gt_dir / f"{stem}_gtFine_labelIds.png", cityscapes_train_ids_to_ids(item.train_ids))
        write_png(gt_dir / f"{stem}_gtFine_labelTrainIds.png", item.train_ids)
        if item.flow_fw is not None:
            prev = frame_stem(job.city, job.seq, item.index - 1)
            write_flow(flow_dir / f"{prev}_flow_fw.png", item.flow_fw)
            write_flow(flow_dir / f"{prev}_flow_bw.png", item.flow_bw)
    return job.frames


def _description(seed, num_train, num_val, frames, height, width, nuisances, jobs) -> dict:
    cities = {split: sorted({j.city for j in jobs if j.split == split}) for split in ("train", "val")}
    return {
        "generator": GENERATOR,
        "version": VERSION,
        "seed": seed,
        "height": height,
        "width": width,
        "frames_per_sequence": frames,
        "fps": FPS,
        "num_train": num_train,
        "num_val": num_val,
        "sequences_per_city": SEQS_PER_CITY,
        "cities": cities,
        "label_set": CITYSCAPES.name,
        "classes": list(CITYSCAPES.classes),
        "classes_drawn": list(CLASSES_DRAWN),
        "labelled_frames": "all",
        "ignore": "255 in labelTrainIds (the ego vehicle's bonnet); 0 'unlabeled' in labelIds",
        "flow": {
            "exact": True,
            "source": "exact: projection of each pixel's known world point (moved by its object's velocity) "
            "into the other frame's camera",
            "format": "KITTI 16-bit PNG (vsseg_edge.data.flowio), 1/64 px",
            "forward": "{stem}_flow_fw.png: frame t -> t+1; pixel (x, y) of t is at (x+u, y+v) in t+1",
            "backward": "{stem}_flow_bw.png: frame t+1 -> t, stored under frame t's name",
            "invalid": "NaN where the point leaves the image or is hidden in the other frame (occlusion)",
            "pairs_per_sequence": frames - 1,
        },
        "nuisances": (
            ["exposure flicker", "white-balance drift", "vignetting", "motion blur", "sensor noise", "JPEG compression"]
            if nuisances
            else []
        ),
    }
