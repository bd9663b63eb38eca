"""Render one sequence frame by frame: clean or degraded image, trainIds and the exact flows to the previous frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .layout import build_scene
from .nuisances import Sensor, clean_bgr, degrade, noise_bank
from .render import Camera, RenderedFrame, Renderer, flow
from .scene import FPS, make_city


@dataclass
class SequenceFrame:
    index: int
    bgr: np.ndarray  # HxWx3 uint8, what the camera records (nuisances applied unless disabled)
    train_ids: np.ndarray  # HxW uint8
    flow_fw: np.ndarray | None  # previous frame → this frame (None for frame 0)
    flow_bw: np.ndarray | None  # this frame → previous frame
    frame: RenderedFrame  # the clean render with its geometry
    camera: Camera  # its intrinsics


def render_sequence(
    city_seed: int, seq: int, frames: int, height: int, width: int, nuisances: bool = True
) -> Iterator[SequenceFrame]:
    """Yield the frames of sequence `seq` of the city with seed `city_seed` (deterministic in both)."""
    scene = build_scene(make_city(city_seed), seq, frames / FPS)
    renderer = Renderer(scene, height, width)
    sensor = Sensor.draw(np.random.default_rng([city_seed, seq, 5]))
    bank = noise_bank(np.random.default_rng([city_seed, seq, 7]), height * width * 3) if nuisances else None
    prev = None
    for k in range(frames):
        cur = renderer(k / FPS)
        fw = bw = None
        if prev is not None:
            fw, bw = flow(prev, cur, renderer.cam), flow(cur, prev, renderer.cam)
        rng = np.random.default_rng([city_seed, seq, k, 6])
        bgr = degrade(cur.image, sensor, rng, bank) if nuisances else clean_bgr(cur.image)
        yield SequenceFrame(k, bgr, cur.train_ids, fw, bw, cur, renderer.cam)
        prev = cur
