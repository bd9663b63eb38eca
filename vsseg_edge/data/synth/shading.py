"""Colours, classes and object ids of rendered pixels: per-primitive materials with procedural textures.

Every pixel has a *material*: its primitive, or one of the ground bands (road, sidewalk, terrain), or the
sky. Colour = material colour × (1 + noise texture sampled in the surface's own coordinates) × sun
shading, then patterns (windows, slats, lamps, sign rims, lane markings) and distance haze. Texture
coordinates are attached to the surface (moving objects carry theirs), so a point keeps its colour from
frame to frame and the photometric error of a warp with the exact flow is small.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from ...core.labels import IGNORE_INDEX
from .scene import BOX, CAR_LIGHTS, LAMPS, PLATE, ROAD, SIDEWALK, SKY, SLATS, TERRAIN, WINDOWS, Scene

TEX = 256  # side of the tiling noise texture, texels
SKY_GROUP, GROUND_GROUP, HOOD_GROUP = 0, 1, -1
F32 = np.float32


def noise_texture(seed: int) -> np.ndarray:
    """A tiling TEXxTEX noise in about −1..1: white noise shaped in the Fourier domain (1/f^½, low-passed)."""
    rng = np.random.default_rng([seed, 3])
    spec = np.fft.fft2(rng.standard_normal((TEX, TEX)))
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(TEX), np.fft.fftfreq(TEX)))
    tex = np.real(np.fft.ifft2(spec * np.exp(-((k / 0.08) ** 2)) / np.maximum(k, 1 / TEX) ** 0.5))
    return (tex / (3 * tex.std())).astype(F32)


def sample(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup of the tiling texture at texel coordinates (u, v) of any shape and magnitude."""
    if u.ndim == 2:
        return cv2.remap(
            tex, np.mod(u, TEX, dtype=F32), np.mod(v, TEX, dtype=F32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP
        )
    shape, n, cols = u.shape, u.size, 512
    rows = max(-(-n // cols), 1)
    mx, my = np.zeros(rows * cols, F32), np.zeros(rows * cols, F32)
    mx[:n], my[:n] = np.mod(u, TEX).ravel(), np.mod(v, TEX).ravel()
    out = cv2.remap(tex, mx.reshape(rows, cols), my.reshape(rows, cols), cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    return out.ravel()[:n].reshape(shape)


class Materials:
    """Look-up tables over materials: primitives 0..N−1, then road, sidewalk, terrain, sky."""

    def __init__(self, scene: Scene):
        pr, road, n = scene.prims, scene.road, len(scene.prims["kind"])
        self.scene, self.n = scene, n
        self.tex = noise_texture(scene.sky_seed)
        self.ground = {ROAD: n, SIDEWALK: n + 1, TERRAIN: n + 2}
        self.sky = n + 3
        self.cls = np.concatenate([pr["cls"], [ROAD, SIDEWALK, TERRAIN, SKY]]).astype(np.uint8)
        self.group = np.concatenate([pr["group"], [GROUND_GROUP] * 3 + [SKY_GROUP]]).astype(np.int32)
        rgb = np.concatenate([pr["rgb"], [road.rgb[c] for c in (ROAD, SIDEWALK, TERRAIN)], [(0, 0, 0)]])
        self.rgb = np.ascontiguousarray(rgb.T, F32)  # 3 x (N+4)
        self.texel = np.concatenate([pr["texel"], [0.08, 0.06, 0.08, 1.0]]).astype(F32)
        self.noise = np.concatenate([pr["noise"], [0.2, 0.15, 0.3, 0.0]]).astype(F32)
        self.offset = (np.arange(n + 4) * 53.7 % TEX).astype(F32)
        self.pattern = np.concatenate([pr["pattern"], [0] * 4]).astype(np.int8)
        self.param = np.concatenate([pr["param"], np.zeros((4, 2))]).astype(F32)
        self.vel = np.ascontiguousarray(np.concatenate([pr["vel"], np.zeros((4, 3))]).T, F32)  # 3 x (N+4)
        self.moving = np.abs(self.vel).sum(0) > 0

    def origins(self, t: float) -> np.ndarray:
        """3x(N+4) texture origins at time t: a primitive's min corner / centre, the world origin otherwise."""
        pr = self.scene.prims
        return np.ascontiguousarray(np.concatenate([pr["lo"] + pr["vel"] * t, np.zeros((4, 3))]).T, F32)

    def material(self, prim: np.ndarray, point: np.ndarray) -> np.ndarray:
        """Material index per pixel; ground pixels get their band from the world X of their point."""
        road = self.scene.road
        mat = np.where(prim >= 0, prim, self.sky)
        x_w = point[0]
        ground = prim == -2
        band = np.where(
            (x_w >= road.left) & (x_w <= road.right),
            self.ground[ROAD],
            np.where(
                (x_w >= road.left - road.walk_l) & (x_w <= road.right + road.walk_r),
                self.ground[SIDEWALK],
                self.ground[TERRAIN],
            ),
        )
        mat[ground] = band[ground]
        return mat


def shade(m: Materials, focal: float, t: float, centre, depth, prim, face, point):
    """Image (HxWx3 float32 RGB 0..1), trainIds, object ids, velocities (3xHxW) and moving mask of a frame."""
    city = m.scene.city
    mat = m.material(prim, point)
    sky = mat == m.sky
    moving = np.take(m.moving, mat)
    vel = np.zeros(point.shape, F32)
    vel[:, moving] = m.vel[:, mat[moving]]
    org = m.origins(t)
    lx, ly, lz = (point[k] - np.take(org[k], mat) for k in range(3))
    u = np.where(face == 0, lz, np.where(face == 3, lx + lz, lx))
    v = np.where(face == 1, lz, ly)
    texel, off = np.take(m.texel, mat), np.take(m.offset, mat)
    fine = sample(m.tex, u / texel + off, v / texel + 0.7 * off)
    coarse = sample(m.tex, u / (10 * texel) + 0.3 * off, v / (10 * texel) + off)
    with np.errstate(divide="ignore"):
        fade = np.minimum(3 * focal * texel / depth, 1.0)
    factor = 1 + np.take(m.noise, mat) * (0.8 * fine * fade + 0.6 * coarse)
    rgb = np.stack([np.take(m.rgb[c], mat) * factor for c in range(3)])
    _patterns(m, mat, face, u, v, lz, depth, coarse, point, rgb)
    haze = np.exp(-np.where(sky, 0, depth) / F32(city.fog))
    rgb *= _lighting(m, city.sun.astype(F32), centre, t, face, mat, point, org) * haze
    rgb += city.sky_horizon.astype(F32)[:, None, None] * (1 - haze)
    rgb[:, sky] = _sky(city, m.tex, point[:, sky])
    image = np.clip(np.moveaxis(rgb, 0, -1), 0, 1)
    return image, np.take(m.cls, mat), np.take(m.group, mat), vel, moving


def _patterns(m: Materials, mat, face, u, v, lz, depth, coarse, point, rgb) -> None:
    """Windows, fence slats, traffic-light lamps, sign rims, car lights, road markings and paving
    (3xHxW rgb edited in place)."""
    flat = rgb.reshape(3, -1)
    pat = np.take(m.pattern, mat)
    idx = np.flatnonzero((pat != 0) & ((face == 0) | (face == 2)))
    pi, mi, ui, vi, fi = (np.take(a, idx) for a in (pat, mat, u, v, face))
    p0, p1 = np.take(m.param[:, 0], mi), np.take(m.param[:, 1], mi)
    q0, q1 = np.maximum(p0, 1e-3), np.maximum(p1, 1e-3)  # (unused parameters are 0)
    fu, fv = np.mod(ui, q0) / q0, np.mod(vi, q1) / q1
    win = idx[(pi == WINDOWS) & (fu > 0.2) & (fu < 0.8) & (fv > 0.35) & (fv < 0.8)]
    flat[:, win] = np.array([[0.10], [0.12], [0.17]], F32) * (1 + 0.8 * np.take(coarse, win)) + 0.1 * flat[:, win]
    flat[:, idx[(pi == SLATS) & (fu < 0.3)]] *= 0.55
    lamp = (pi == LAMPS) & (fi == 2)
    for k, colour in enumerate(((1.0, 0.15, 0.1), (1.0, 0.75, 0.1), (0.2, 1.0, 0.4))):
        on = lamp & (np.hypot(ui - 0.17, vi - (0.8 - 0.3 * k)) < 0.11)
        flat[:, idx[on]] = np.asarray(colour, F32)[:, None] * np.where(p0[on].astype(int) == k, 1.0, 0.25)
    flat[:, idx[(pi == PLATE) & (fi == 2) & ((ui < 0.06) | (vi < 0.06) | (ui > p0 - 0.06) | (vi > p0 - 0.06))]] = 0.92
    light = (pi == CAR_LIGHTS) & (fi == 2) & (vi > 0.35) & (vi < 0.55) & ((ui < 0.35) | (ui > p0 - 0.35))
    rear = np.take(lz, idx[light]) < 0.5 * np.take(m.param[:, 1], mi[light])
    red, white = np.array([[0.75], [0.05], [0.04]], F32), np.array([[0.95], [0.92], [0.8]], F32)
    flat[:, idx[light]] = np.where(rear, red, white)
    road, x_w = m.scene.road, point[0]
    lines = (np.abs(x_w - road.left - 0.3) < 0.07) | (np.abs(x_w - road.right + 0.3) < 0.07)
    dashed = np.zeros_like(lines)
    for xl in road.lane_lines:
        dashed |= np.abs(x_w - xl) < 0.07
    idx = np.flatnonzero((lines | dashed) & (mat == m.ground[ROAD]))
    keep = ~np.take(dashed, idx) | (np.mod(np.take(point[2], idx), 9.0) < 3.5)
    flat[:, idx[keep]] = 0.8
    walk = mat == m.ground[SIDEWALK]
    idx = np.flatnonzero(((np.abs(x_w - road.left) < 0.2) | (np.abs(x_w - road.right) < 0.2)) & walk)
    flat[:, idx] *= 1.25
    idx = np.flatnonzero(walk & (depth < 30))  # paving joints, where they are resolved
    joint = (np.mod(np.take(x_w, idx), 0.6) < 0.04) | (np.mod(np.take(point[2], idx), 0.6) < 0.04)
    flat[:, idx[joint]] *= 0.8


def _lighting(m: Materials, sun, centre, t, face, mat, point, org):
    """Ambient + Lambert shading. A box face entered along axis a faces the camera's side of the box, so its
    normal is sign(camera_a − box centre_a) along a: a per-frame table over (material, face) gives n·sun;
    the ground faces up; ellipsoid pixels use their own normal."""
    pr, n = m.scene.prims, m.n
    mid = pr["lo"] + pr["vel"] * t + np.where(pr["kind"][:, None] == BOX, (pr["hi"] - pr["lo"]) / 2, 0.0)
    table = np.zeros((n + 4, 4), F32)
    table[:n, :3] = np.sign(centre - mid) * sun
    table[n : n + 3, 1] = sun[1]
    n_dot_sun = np.take(table.ravel(), mat * 4 + face)
    shadow = _in_shadow(m, sun, point, mat)
    if shadow is not None:
        n_dot_sun[shadow] = 0.0
    idx = np.nonzero(face == 3)
    mi = mat[idx]
    nrm = (point[:, idx[0], idx[1]] - org[:, mi]) / pr["hi"][mi].T.astype(F32) ** 2
    n_dot_sun[idx] = (nrm[0] * sun[0] + nrm[1] * sun[1] + nrm[2] * sun[2]) / np.sqrt((nrm * nrm).sum(0))
    return 0.5 + 0.55 * np.maximum(n_dot_sun, 0)


def _in_shadow(m: Materials, sun, point, mat):
    """HxW mask of the pixels in the shadow of the front row of buildings on the sun's side (None: no
    shadows): the ray from the point towards the sun crosses that row's plane below the row's height there."""
    city = m.scene.city
    if not city.shadows or abs(sun[0]) < 0.05 or not m.scene.skylines or not len(m.scene.skylines[0].z0):
        return None
    row = m.scene.skylines[int(sun[0] > 0)]
    if not len(row.z0):
        return None
    tau = (F32(row.side * row.line) - point[0]) / sun[0]  # ray length to the row's plane
    z_q = point[2] + tau * sun[2]
    k = np.clip(np.searchsorted(row.z0, z_q, side="right") - 1, 0, len(row.z0) - 1)
    height = np.where((z_q >= np.take(row.z0, k)) & (z_q < np.take(row.z1, k)), np.take(row.height, k), 0.0)
    return (tau > 0.05) & (point[1] + tau * sun[1] < height) & (mat != m.sky)


def _sky(city, tex, direction):
    """3xK sky colours from unit ray directions only (the sky moves with camera rotation, not translation):
    a horizon-to-zenith gradient with clouds."""
    el = np.arcsin(np.clip(direction[1], -1, 1))
    az = np.arctan2(direction[0], direction[2])
    mix = np.clip(el / 0.35, 0, 1) ** 0.8
    colour = city.sky_horizon[:, None] * (1 - mix) + city.sky_top[:, None] * mix
    c = np.clip(sample(tex, az * 150, el * 400 + 77) * 1.6 - 0.1, 0, 1)
    return (colour * (1 - c) + 0.93 * c).astype(F32)


@functools.lru_cache(maxsize=8)
def _hood_mask(hood: float, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Mask of the bonnet (a flat arc at the bottom of the image) and its RGB colours (Kx3)."""
    xs = (np.arange(w) - (w - 1) / 2) / (w / 2)
    top = h * (1 - hood) + h * 0.04 * xs**2
    mask = np.arange(h)[:, None] >= top[None, :]
    shade_col = 0.06 + 0.08 * np.linspace(1, 0, h)[:, None] * np.ones((1, w))
    return mask, (shade_col[mask][:, None] * np.array([1.0, 1.0, 1.1])).astype(F32)


def draw_hood(hood: float, frame) -> None:
    """The ego vehicle's bonnet at the bottom of the image: fixed in the camera, ignored in the labels."""
    if hood <= 0:
        return
    mask, colours = _hood_mask(hood, *frame.train_ids.shape)
    frame.image[mask] = colours
    frame.train_ids[mask] = IGNORE_INDEX
    frame.group[mask] = HOOD_GROUP
    frame.depth[mask] = 0.5
    frame.vel[:, mask] = 0.0
    frame.moving[mask] = False
