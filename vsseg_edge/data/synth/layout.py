"""Draw one sequence's scene: street sides (buildings, walls, fences, hedges), furniture (trees, poles,
signs, traffic lights), traffic (cars, trucks, buses, cyclists) and pedestrians, all in world metres."""

from __future__ import annotations

import numpy as np

from .scene import (
    BASE_RGB,
    BICYCLE,
    BUILDING,
    BUILDING_RGB,
    BUS,
    BUS_RGB,
    CAR,
    CAR_LIGHTS,
    CLOTHES_RGB,
    FENCE,
    LAMPS,
    LIGHT,
    MOTORCYCLE,
    PERSON,
    PLATE,
    POLE,
    RIDER,
    ROAD,
    SIDEWALK,
    SIGN,
    SIGN_RGB,
    SLATS,
    TERRAIN,
    TRUCK,
    VEGETATION,
    VEHICLE_RGB,
    WALL,
    WINDOWS,
    City,
    Prims,
    Road,
    Scene,
    Skyline,
    Trajectory,
)

GLASS = (0.10, 0.12, 0.16)
TYRE = (0.05, 0.05, 0.05)
SKIN = (0.80, 0.62, 0.50)
AHEAD = 160.0  # metres of street built beyond where the ego camera ends


def _rgb(city: City, cls: int, base, rng, spread=0.08) -> np.ndarray:
    return np.clip(np.asarray(base) * city.jitter[cls] * rng.uniform(1 - spread, 1 + spread, 3), 0, 1)


def _pick(rng, choices):
    return choices[int(rng.integers(len(choices)))]


def _span(side: int, near: float, far: float) -> tuple[float, float]:
    """X interval between distances `near` and `far` from the road axis on one side (−1 left, +1 right)."""
    a, b = side * near, side * far
    return min(a, b), max(a, b)


def build_scene(city: City, seed: int, duration: float) -> Scene:
    """Draw one sequence's street, traffic and ego trajectory (deterministic in the city and `seed`)."""
    rng = np.random.default_rng([city.seed, seed, 11])
    lane = rng.uniform(3.0, 3.6)
    n_right, n_left = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    park_r, park_l = (2.3 if rng.random() < 0.5 else 0.0), (2.3 if rng.random() < 0.4 else 0.0)
    right, left = n_right * lane + park_r, -(n_left * lane + park_l)
    lines = tuple(k * lane for k in range(-n_left + 1, n_right))
    road = Road(
        left=left,
        right=right,
        walk_l=rng.uniform(2, 5),
        walk_r=rng.uniform(2, 5),
        lane_lines=lines,
        rgb={c: _rgb(city, c, BASE_RGB[c], rng) for c in (ROAD, SIDEWALK, TERRAIN)},
    )
    ego_lane = n_right - 1 - int(n_right == 2 and rng.random() < 0.5)
    speed = rng.uniform(3, 12)
    traj = Trajectory(
        x0=(ego_lane + 0.5) * lane,
        z0=0.0,
        speed=speed,
        speed_amp=speed * rng.uniform(0, 0.3),
        speed_period=rng.uniform(4, 10),
        lat_amp=rng.uniform(0, 0.4),
        lat_period=rng.uniform(3, 8),
        yaw0=np.deg2rad(rng.uniform(-3, 3)),
        yaw_amp=np.deg2rad(rng.uniform(0, 3)),
        yaw_period=rng.uniform(2, 6),
        phase=rng.uniform(0, 2 * np.pi),
        pitch_amp=np.deg2rad(rng.uniform(0, 0.4)),
        height=city.cam_height,
    )
    zr = (-40.0, traj.pose(duration)[0][2] + AHEAD)
    prims, skylines = Prims(), []
    for side in (-1, 1):
        skylines.append(add_street_side(prims, city, road, side, zr, rng))
        add_furniture(prims, city, road, side, zr, rng)
        add_pedestrians(prims, city, road, side, zr, duration, rng)
    add_traffic(prims, city, road, traj, lane, (n_left, n_right, park_l, park_r), zr, duration, rng)
    return Scene(
        city=city,
        road=road,
        traj=traj,
        prims=prims.freeze(),
        sky_seed=int(rng.integers(1 << 31)),
        skylines=tuple(skylines),
    )


def add_street_side(p: Prims, city: City, road: Road, side: int, zr, rng) -> Skyline:
    """Front row (buildings, walls, fences, hedges, open ground) and a taller background row; returns the
    front row's height profile."""
    curb = road.right if side > 0 else -road.left
    walk = road.walk_r if side > 0 else road.walk_l
    line = curb + walk + (rng.uniform(1, 6) if rng.random() < 0.4 else 0.0)  # distance of the building line
    z, segments = zr[0], []
    while z < zr[1]:
        u = rng.random()
        length = rng.uniform(8, 30) if u < city.urban else rng.uniform(5, 18)
        z0, z1 = z + rng.uniform(0, 1.0), z + length
        if u < city.urban:
            near = line + rng.uniform(0, 1.5)
            lo_x, hi_x = _span(side, near, near + rng.uniform(8, 20))
            params = (rng.uniform(2.2, 3.5), rng.uniform(2.8, 3.6))
            height = rng.uniform(*city.building_h)
            segments.append((z0, z1, height))
            p.box(
                (lo_x, 0, z0),
                (hi_x, height, z1),
                BUILDING,
                _rgb(city, BUILDING, _pick(rng, BUILDING_RGB), rng),
                p.new_group(),
                noise=0.12,
                texel=0.1,
                pattern=WINDOWS,
                param=params,
            )
        else:
            kind = _pick(rng, (WALL, FENCE, VEGETATION, None))
            if kind is not None:
                height, thick = {
                    WALL: (rng.uniform(1, 3), 0.3),
                    FENCE: (rng.uniform(1, 2.2), 0.1),
                    VEGETATION: (rng.uniform(0.8, 2.2), 1.0),
                }[kind]
                lo_x, hi_x = _span(side, line, line + thick)
                segments.append((z0, z1, height))
                p.box(
                    (lo_x, 0, z0),
                    (hi_x, height, z1),
                    kind,
                    _rgb(city, kind, BASE_RGB[kind], rng),
                    p.new_group(),
                    noise=0.3 if kind == VEGETATION else 0.15,
                    texel=0.08 if kind == VEGETATION else 0.1,
                    pattern=SLATS if kind == FENCE else 0,
                    param=(rng.uniform(0.1, 0.25), 0),
                )
        z = z1
    _background_row(p, city, side, line + rng.uniform(18, 30), zr, rng)
    z0s, z1s, heights = (np.array(col, float) for col in zip(*segments)) if segments else (np.zeros(0),) * 3
    return Skyline(side, line, z0s, z1s, heights)


def _background_row(p: Prims, city: City, side: int, dist: float, zr, rng) -> None:
    z = zr[0]
    while z < zr[1]:
        length = rng.uniform(10, 40)
        if rng.random() < 0.4 + 0.6 * city.urban:
            lo_x, hi_x = _span(side, dist, dist + 20)
            p.box(
                (lo_x, 0, z),
                (hi_x, rng.uniform(city.building_h[0] * 1.3, city.building_h[1] * 1.5), z + length),
                BUILDING,
                _rgb(city, BUILDING, _pick(rng, BUILDING_RGB), rng),
                p.new_group(),
                noise=0.12,
                texel=0.15,
                pattern=WINDOWS,
                param=(rng.uniform(2.2, 3.5), rng.uniform(2.8, 3.6)),
            )
        else:
            r = rng.uniform(3, 7, 3)
            p.ellipsoid(
                (side * (dist + r[0]), r[1] * rng.uniform(1, 1.6), z + length / 2),
                r,
                VEGETATION,
                _rgb(city, VEGETATION, BASE_RGB[VEGETATION], rng),
                p.new_group(),
                noise=0.35,
                texel=0.12,
            )
        z += length


def add_furniture(p: Prims, city: City, road: Road, side: int, zr, rng) -> None:
    """Trees on the sidewalk, poles with signs or traffic lights at the curb."""
    curb = road.right if side > 0 else -road.left
    walk = road.walk_r if side > 0 else road.walk_l
    z = zr[0] + rng.uniform(0, city.tree_gap)
    while z < zr[1]:
        x = side * (curb + rng.uniform(0.7, max(walk - 0.7, 0.8)))
        trunk, r = rng.uniform(1.8, 3.0), rng.uniform([1.0, 1.3, 1.0], [2.2, 2.8, 2.2])
        g, rgb = p.new_group(), _rgb(city, VEGETATION, BASE_RGB[VEGETATION], rng, 0.15)
        p.box((x - 0.15, 0, z - 0.15), (x + 0.15, trunk + 0.3, z + 0.15), VEGETATION, rgb * 0.55, g, noise=0.2)
        p.ellipsoid((x, trunk + r[1] * 0.8, z), r, VEGETATION, rgb, g, noise=0.4, texel=0.05)
        z += city.tree_gap * rng.uniform(0.6, 1.4)
    z = zr[0] + rng.uniform(0, 20)
    while z < zr[1]:
        _pole(p, city, side, side * (curb + 0.4), z, rng)
        z += rng.uniform(12, 40)


def _pole(p: Prims, city: City, side: int, x: float, z: float, rng) -> None:
    g, u = p.new_group(), rng.random()
    h = rng.uniform(2.6, 3.4) if u < 0.35 else rng.uniform(4, 8)
    grey = _rgb(city, POLE, BASE_RGB[POLE], rng)
    p.box((x - 0.07, 0, z - 0.07), (x + 0.07, h, z + 0.07), POLE, grey, g, noise=0.1)
    if u < 0.35 or rng.random() < 0.2:  # a sign facing the traffic (thin along Z)
        w, y = rng.uniform(0.45, 0.8), (h - 0.4 if u < 0.35 else rng.uniform(2.2, 3.0))
        p.box(
            (x - w / 2, y - w / 2, z - 0.1),
            (x + w / 2, y + w / 2, z - 0.07),
            SIGN,
            _rgb(city, SIGN, _pick(rng, SIGN_RGB), rng),
            g,
            noise=0.05,
            pattern=PLATE,
            param=(w, w),
        )
    elif u < 0.6:  # a traffic light, on the pole or hanging from an arm over the road
        lx = x - side * rng.uniform(2.5, 5) if rng.random() < 0.5 else x
        if lx != x:
            p.box((min(x, lx), h - 0.25, z - 0.06), (max(x, lx), h - 0.13, z + 0.06), POLE, grey, g, noise=0.1)
        top = h - 0.13 if lx != x else h
        p.box(
            (lx - 0.17, top - 1.0, z - 0.3),
            (lx + 0.17, top, z - 0.07),
            LIGHT,
            BASE_RGB[LIGHT],
            g,
            noise=0.05,
            pattern=LAMPS,
            param=(float(rng.integers(3)), 0),
        )


def _person(p: Prims, x, z, s, vel, rng, cls=PERSON, y0=0.0) -> None:
    g, cloth = p.new_group(), _pick(rng, CLOTHES_RGB)
    legs = np.asarray(_pick(rng, CLOTHES_RGB)) * rng.uniform(0.7, 1.0)
    if y0 == 0.0:
        p.box((x - 0.17 * s, 0, z - 0.11 * s), (x + 0.17 * s, 0.85 * s, z + 0.11 * s), cls, legs, g, vel, noise=0.1)
    p.box(
        (x - 0.22 * s, y0 + 0.85 * s, z - 0.13 * s),
        (x + 0.22 * s, y0 + 1.45 * s, z + 0.13 * s),
        cls,
        cloth,
        g,
        vel,
        noise=0.1,
    )
    p.ellipsoid(
        (x, y0 + 1.58 * s, z),
        (0.1 * s, 0.13 * s, 0.11 * s),
        cls,
        np.asarray(SKIN) * rng.uniform(0.5, 1.1),
        g,
        vel,
        noise=0.05,
    )


def add_pedestrians(p: Prims, city: City, road: Road, side: int, zr, duration, rng) -> None:
    curb = road.right if side > 0 else -road.left
    walk = road.walk_r if side > 0 else road.walk_l
    n = int(rng.poisson(rng.uniform(0.02, 0.12) * (zr[1] - zr[0])))
    for _ in range(n):
        speed = 0.0 if rng.random() < 0.3 else rng.choice((-1, 1)) * rng.uniform(0.8, 1.8)
        x = side * (curb + rng.uniform(0.4, max(walk - 0.4, 0.5)))
        _person(p, x, rng.uniform(*zr), rng.uniform(0.85, 1.1), (0, 0, speed), rng)
    ego_end = zr[1] - AHEAD  # where the ego camera is at the end of the sequence (see build_scene)
    for _ in range(int(rng.integers(0, 2))):  # someone crossing the road ahead, beyond the ego's path
        vx = -side * rng.uniform(1.0, 1.6)
        z = ego_end + rng.uniform(12, 60)
        _person(p, side * (curb + 0.5), z, rng.uniform(0.85, 1.1), (vx, 0, 0), rng)


def _vehicle(p: Prims, city: City, x, z, vz, rng, cars_only=False) -> float:
    """Add a car (84 %), truck or bus centred on lane X `x` with its rear at `z`; returns its length."""
    g, u, v = p.new_group(), 0.0 if cars_only else rng.random(), (0, 0, vz)
    if u < 0.84:
        cls, length, width, height = CAR, rng.uniform(3.8, 4.9), rng.uniform(1.65, 1.9), rng.uniform(0.95, 1.1)
        rgb = _rgb(city, CAR, _pick(rng, VEHICLE_RGB), rng)
        p.box(
            (x - width / 2, 0.3, z),
            (x + width / 2, height, z + length),
            cls,
            rgb,
            g,
            v,
            noise=0.05,
            pattern=CAR_LIGHTS,
            param=(width, length),
        )
        p.box(
            (x - width / 2 + 0.08, height, z + 0.25 * length),
            (x + width / 2 - 0.08, height + 0.5, z + 0.8 * length),
            cls,
            GLASS,
            g,
            v,
            noise=0.1,
        )
    elif u < 0.92:
        cls, length, width = TRUCK, rng.uniform(6, 9), 2.4
        rgb = _rgb(city, TRUCK, _pick(rng, VEHICLE_RGB), rng)
        p.box(
            (x - width / 2, 0.5, z),
            (x + width / 2, rng.uniform(3.0, 3.8), z + length - 2.0),
            cls,
            rgb,
            g,
            v,
            noise=0.08,
        )
        p.box(
            (x - width / 2, 0.5, z + length - 2.0), (x + width / 2, 2.8, z + length), cls, rgb * 0.8, g, v, noise=0.08
        )
    else:
        cls, length, width = BUS, rng.uniform(10, 13), 2.5
        rgb = _rgb(city, BUS, _pick(rng, BUS_RGB), rng)
        p.box(
            (x - width / 2, 0.35, z),
            (x + width / 2, 3.1, z + length),
            cls,
            rgb,
            g,
            v,
            noise=0.06,
            pattern=WINDOWS,
            param=(rng.uniform(1.2, 1.8), 3.2),
        )
    for axle in (0.18, 0.82):
        zc = z + axle * length
        p.box(
            (x - width / 2 + 0.05, 0, zc - 0.32), (x + width / 2 - 0.05, 0.62, zc + 0.32), cls, TYRE, g, v, noise=0.05
        )
    return length


def _cyclist(p: Prims, city: City, x, z, vz, rng) -> None:
    g, v = p.new_group(), (0, 0, vz)
    motor = rng.random() < 0.25
    cls, r, t = (MOTORCYCLE, 0.32, 0.12) if motor else (BICYCLE, 0.34, 0.04)
    dark = _rgb(city, BICYCLE, BASE_RGB[BICYCLE], rng)
    for dz in (-0.55, 0.55):
        p.ellipsoid((x, r, z + dz), (t, r, r), cls, TYRE, g, v, noise=0.05)
    thick = 0.2 if motor else 0.025
    p.box(
        (x - thick, 0.35, z - 0.45),
        (x + thick, 0.8 if motor else 0.75, z + 0.45),
        cls,
        _rgb(city, cls, _pick(rng, VEHICLE_RGB), rng) if motor else dark,
        g,
        v,
        noise=0.05,
    )
    p.box((x - 0.3, 0.95, z + 0.45), (x + 0.3, 1.0, z + 0.5), cls, dark, g, v, noise=0.05)
    p.box((x - 0.15, 0.45, z - 0.2), (x + 0.15, 0.95, z + 0.1), RIDER, _pick(rng, CLOTHES_RGB), g, v, noise=0.1)
    s = rng.uniform(0.9, 1.05)
    cloth, y0 = _pick(rng, CLOTHES_RGB), 0.95 - 0.85 * s
    p.box((x - 0.22 * s, y0 + 0.85 * s, z - 0.2), (x + 0.22 * s, y0 + 1.45 * s, z + 0.1), RIDER, cloth, g, v, noise=0.1)
    p.ellipsoid((x, y0 + 1.6 * s, z), (0.12, 0.14, 0.13), RIDER, (0.2, 0.2, 0.22) if motor else SKIN, g, v, noise=0.05)


def add_traffic(p: Prims, city: City, road: Road, traj: Trajectory, lane: float, lanes, zr, duration, rng) -> None:
    """Vehicles in every lane (one speed per lane so they never overlap), parked cars, a few cyclists."""
    n_left, n_right, park_l, park_r = lanes
    ego_v = traj.max_speed
    for k in range(-n_left, n_right):
        x = (k + 0.5) * lane
        ego_lane = abs(x - traj.x0) < lane / 2
        vz = -rng.uniform(5, 14) if k < 0 else traj.speed * rng.uniform(0.5, 1.4)
        if ego_lane:
            vz = max(vz, ego_v)  # the ego camera never catches up with the vehicle ahead
        z = rng.uniform(14, 25) if ego_lane else zr[0] + rng.uniform(0, 20)
        z_end = zr[1] + (abs(vz) * duration if vz < 0 else 0)
        while z < z_end:
            z += _vehicle(p, city, x, z, vz, rng) + rng.uniform(6, 45)
    for side, width, edge in ((1, park_r, road.right), (-1, park_l, road.left)):
        z = zr[0]
        while width and z < zr[1]:
            if rng.random() < 0.7:
                z += _vehicle(p, city, edge - side * 1.15, z, 0.0, rng, cars_only=True)
            z += rng.uniform(1.0, 8.0)
    for _ in range(int(rng.integers(0, 3))):
        vz = rng.uniform(3, 7)
        x = road.right - park_r - 0.7 if rng.random() < 0.7 else road.left + park_l + 0.7
        if x < 0:
            vz = -vz
        z0 = rng.uniform(10, 80) + (max(ego_v - vz, 0) * duration if abs(x - traj.x0) < 2.5 else 0)
        _cyclist(p, city, x, z0, vz, rng)
