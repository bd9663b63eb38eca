"""The 2.5D street-scene model: a straight road along +Z, boxes and ellipsoids beside and on it, a camera driving.

World frame: X to the right of the road direction, Y up, Z along the road, metres; time in seconds.
Everything in a scene is a list of primitives (axis-aligned boxes and axis-aligned ellipsoids), each with
a Cityscapes trainId, a constant velocity (zero for the static world), a base colour and a texture
pattern; the ground plane Y = 0 is split into road / sidewalk / terrain bands by X. Because every
primitive has a closed-form position at any time, the renderer knows the world point behind each pixel
and the optical flow between frames follows exactly.

A *city* fixes the look (palette, building heights, density, sun, camera intrinsics, ego hood); a
*sequence* draws its own layout, traffic and ego trajectory inside that city. Train and val use disjoint
cities, so a model is evaluated on unseen streets and unseen palettes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FPS = 17.0  # Cityscapes' frame rate
BOX, ELLIPSOID = 0, 1

# trainIds (Cityscapes order)
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(11, 19)

# texture patterns applied on top of the noisy base colour
PLAIN, WINDOWS, LAMPS, SLATS, PLATE, CAR_LIGHTS = range(6)

# base sRGB colours (0..1) of the classes whose colour does not vary per object
BASE_RGB = {
    ROAD: (0.32, 0.32, 0.34),
    SIDEWALK: (0.56, 0.52, 0.50),
    WALL: (0.62, 0.58, 0.52),
    FENCE: (0.46, 0.40, 0.33),
    POLE: (0.42, 0.42, 0.44),
    LIGHT: (0.10, 0.10, 0.11),
    VEGETATION: (0.20, 0.40, 0.13),
    TERRAIN: (0.45, 0.50, 0.24),
    SKY: (0.55, 0.70, 0.90),
    BICYCLE: (0.15, 0.15, 0.18),
}
BUILDING_RGB = (
    (0.72, 0.66, 0.55),
    (0.60, 0.33, 0.25),
    (0.55, 0.55, 0.57),
    (0.85, 0.83, 0.78),
    (0.50, 0.42, 0.33),
    (0.78, 0.72, 0.60),
    (0.40, 0.42, 0.45),
)
VEHICLE_RGB = (
    (0.85, 0.85, 0.85),
    (0.08, 0.08, 0.09),
    (0.45, 0.46, 0.48),
    (0.65, 0.10, 0.10),
    (0.12, 0.22, 0.55),
    (0.70, 0.70, 0.72),
    (0.20, 0.35, 0.25),
    (0.80, 0.65, 0.20),
)
BUS_RGB = ((0.90, 0.80, 0.15), (0.85, 0.85, 0.85), (0.70, 0.15, 0.12), (0.15, 0.35, 0.60))
SIGN_RGB = ((0.10, 0.25, 0.70), (0.80, 0.10, 0.10), (0.92, 0.92, 0.92), (0.95, 0.80, 0.10))
CLOTHES_RGB = (
    (0.10, 0.10, 0.12),
    (0.25, 0.28, 0.45),
    (0.55, 0.10, 0.12),
    (0.75, 0.75, 0.72),
    (0.35, 0.30, 0.22),
    (0.20, 0.40, 0.30),
    (0.60, 0.50, 0.40),
)


@dataclass(frozen=True)
class City:
    """What all sequences of one city share: look, density, camera intrinsics and ego vehicle."""

    seed: int
    jitter: dict  # trainId → RGB multiplier applied to that class's colours
    building_h: tuple[float, float]
    urban: float  # probability that a street segment is a building (else wall, fence, hedge, open)
    tree_gap: float  # mean distance between trees along a sidewalk, metres
    sun: np.ndarray  # unit vector towards the sun
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    fog: float  # metres
    focal: float  # × image width
    cam_height: float
    horizon: float  # principal point row, × image height
    hood: float  # ego-vehicle hood height, × image height (0 = none)
    shadows: bool  # sunny: the front rows of buildings cast shadows


def make_city(seed: int) -> City:
    rng = np.random.default_rng([seed, 7])
    jitter = {c: rng.uniform(0.8, 1.2, 3) for c in range(19)}
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(0.25, 0.8)
    top = np.array([0.30, 0.50, 0.85]) * rng.uniform(0.8, 1.1, 3)
    overcast = rng.random() < 0.35
    if overcast:
        top = np.full(3, rng.uniform(0.65, 0.8))
    return City(
        seed=seed,
        jitter=jitter,
        building_h=(rng.uniform(5, 9), rng.uniform(12, 28)),
        urban=rng.uniform(0.45, 0.85),
        tree_gap=rng.uniform(8, 30),
        sun=np.array([np.cos(az) * np.cos(el), np.sin(el), np.sin(az) * np.cos(el)]),
        sky_top=np.clip(top, 0, 1),
        sky_horizon=np.clip(top * 0.4 + 0.6, 0, 1),
        fog=rng.uniform(120, 400),
        focal=rng.uniform(0.85, 1.1),
        cam_height=rng.uniform(1.25, 1.6),
        horizon=rng.uniform(0.42, 0.5),
        hood=rng.uniform(0.06, 0.12) if rng.random() < 0.5 else 0.0,
        shadows=not overcast,
    )


@dataclass
class Prims:
    """Struct-of-arrays of the scene's primitives (built by appending, then `freeze`d to numpy arrays)."""

    kind: list = field(default_factory=list)
    lo: list = field(default_factory=list)  # box min corner / ellipsoid centre at t = 0
    hi: list = field(default_factory=list)  # box max corner / ellipsoid radii
    vel: list = field(default_factory=list)
    cls: list = field(default_factory=list)
    group: list = field(default_factory=list)  # one id per rigid object (car body + cabin + wheels …)
    rgb: list = field(default_factory=list)
    noise: list = field(default_factory=list)  # texture amplitude
    texel: list = field(default_factory=list)  # metres per texel
    pattern: list = field(default_factory=list)
    param: list = field(default_factory=list)  # 2 pattern parameters
    _next_group: int = 2  # 0 = sky, 1 = ground

    def new_group(self) -> int:
        self._next_group += 1
        return self._next_group - 1

    def box(self, lo, hi, cls, rgb, group, vel=(0, 0, 0), noise=0.15, texel=0.08, pattern=PLAIN, param=(0, 0)):
        self._add(BOX, lo, hi, cls, rgb, group, vel, noise, texel, pattern, param)

    def ellipsoid(self, centre, radii, cls, rgb, group, vel=(0, 0, 0), noise=0.25, texel=0.06):
        self._add(ELLIPSOID, centre, radii, cls, rgb, group, vel, noise, texel, PLAIN, (0, 0))

    def _add(self, kind, lo, hi, cls, rgb, group, vel, noise, texel, pattern, param):
        for name, value in (
            ("kind", kind),
            ("lo", lo),
            ("hi", hi),
            ("vel", vel),
            ("cls", cls),
            ("group", group),
            ("rgb", rgb),
            ("noise", noise),
            ("texel", texel),
            ("pattern", pattern),
            ("param", param),
        ):
            getattr(self, name).append(value)

    def freeze(self) -> dict[str, np.ndarray]:
        f = np.float64
        return {
            "kind": np.asarray(self.kind, np.int8),
            "lo": np.asarray(self.lo, f).reshape(-1, 3),
            "hi": np.asarray(self.hi, f).reshape(-1, 3),
            "vel": np.asarray(self.vel, f).reshape(-1, 3),
            "cls": np.asarray(self.cls, np.uint8),
            "group": np.asarray(self.group, np.int32),
            "rgb": np.clip(np.asarray(self.rgb, f).reshape(-1, 3), 0, 1),
            "noise": np.asarray(self.noise, f),
            "texel": np.asarray(self.texel, f),
            "pattern": np.asarray(self.pattern, np.int8),
            "param": np.asarray(self.param, f).reshape(-1, 2),
        }


@dataclass(frozen=True)
class Road:
    """Ground bands across X: road [left, right], sidewalks beyond, terrain further out."""

    left: float
    right: float
    walk_l: float
    walk_r: float
    lane_lines: tuple[float, ...]  # X of dashed lane markings
    rgb: dict  # trainId → base colour of the ground classes


@dataclass(frozen=True)
class Trajectory:
    """Ego camera: position and orientation as smooth functions of time."""

    x0: float
    z0: float
    speed: float  # mean forward speed, m/s
    speed_amp: float  # the speed swings by ± this (< speed) over speed_period
    speed_period: float
    lat_amp: float
    lat_period: float
    yaw0: float
    yaw_amp: float
    yaw_period: float
    phase: float
    pitch_amp: float
    height: float

    @property
    def max_speed(self) -> float:
        return self.speed + self.speed_amp

    def pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Camera centre (3,) and rotation camera→world (3x3) at time t (camera axes: x right, y up, z forward)."""
        w = 2 * np.pi / self.speed_period
        z = self.z0 + self.speed * t + self.speed_amp / w * (np.cos(self.phase) - np.cos(w * t + self.phase))
        x = self.x0 + self.lat_amp * np.sin(2 * np.pi * t / self.lat_period + self.phase)
        yaw = self.yaw0 + self.yaw_amp * np.sin(2 * np.pi * t / self.yaw_period + 2 * self.phase)
        pitch = self.pitch_amp * np.sin(2 * np.pi * t * 1.7 + 3 * self.phase)
        cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        return np.array([x, self.height, z]), r_yaw @ r_pitch


@dataclass(frozen=True)
class Skyline:
    """One side's front row as a height profile along Z: segments [z0, z1) of a height, at distance `line`
    from the road axis (gaps have height 0); used to cast the sun's shadows."""

    side: int
    line: float
    z0: np.ndarray
    z1: np.ndarray
    height: np.ndarray


@dataclass(frozen=True)
class Scene:
    city: City
    road: Road
    traj: Trajectory
    prims: dict  # frozen Prims
    sky_seed: int
    skylines: tuple = ()  # Skyline of each side
