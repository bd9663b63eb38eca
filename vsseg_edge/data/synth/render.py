"""Ray-cast renderer of a `Scene` and the exact optical flow between two rendered frames.

Each pixel's ray (parametrised by camera z-depth, so the ray parameter *is* the depth) is intersected with
the ground plane and with every primitive whose projected bounding box covers it, keeping the nearest hit
(a z-buffer). A frame keeps, per pixel, the world point, its velocity and the id of the rigid object it
belongs to; the flow to another frame is the projection of that point, moved by its velocity, into the
other camera, marked invalid (NaN) where it leaves the image or is hidden there by something else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene import BOX, Scene
from .shading import Materials, draw_hood, shade

NEAR = 0.3  # metres: nothing closer to the camera is drawn
FAR = 1500.0
F32 = np.float32


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics; pixel centres are at integer coordinates."""

    height: int
    width: int
    focal: float
    cx: float
    cy: float

    @classmethod
    def for_scene(cls, scene: Scene, height: int, width: int) -> Camera:
        return cls(height, width, scene.city.focal * width, (width - 1) / 2.0, scene.city.horizon * height)

    def rays(self) -> np.ndarray:
        """3xHxW float32 ray directions in camera axes (x right, y up, z forward), scaled so that z = 1."""
        out = np.ones((3, self.height, self.width), F32)
        out[0] = ((np.arange(self.width) - self.cx) / self.focal)[None, :]
        out[1] = (-(np.arange(self.height) - self.cy) / self.focal)[:, None]
        return out


@dataclass
class RenderedFrame:
    """One rendered frame: clean RGB image in 0..1, trainIds and the geometry needed for the flow."""

    t: float
    centre: np.ndarray  # camera centre (3,)
    rot: np.ndarray  # camera → world rotation (3x3)
    image: np.ndarray  # HxWx3 float32 RGB
    train_ids: np.ndarray  # HxW uint8
    depth: np.ndarray  # HxW camera z (inf: sky)
    group: np.ndarray  # HxW rigid-object id (0 sky, 1 ground, −1 ego hood, ≥2 objects)
    point: np.ndarray  # 3xHxW world point (sky: unit ray direction)
    vel: np.ndarray  # 3xHxW world velocity of that point
    moving: np.ndarray  # HxW: the point has a non-zero velocity


class Renderer:
    """Renders one scene at any time; holds what does not change between frames (rays, materials)."""

    def __init__(self, scene: Scene, height: int, width: int):
        self.scene, self.cam = scene, Camera.for_scene(scene, height, width)
        self.rays = self.cam.rays()
        self.materials = Materials(scene)

    def __call__(self, t: float) -> RenderedFrame:
        """Render the scene at time `t` (seconds)."""
        centre, rot = self.scene.traj.pose(t)
        h, w = self.cam.height, self.cam.width
        d = np.einsum("ij,jhw->ihw", rot.astype(F32), self.rays)  # (einsum: no BLAS threads)
        d[np.abs(d) < 1e-9] = 1e-9
        depth = np.full((h, w), np.inf, F32)
        prim = np.full((h, w), -1, np.int32)  # −1 sky, −2 ground, ≥0 primitive
        face = np.ones((h, w), np.int8)  # axis of the hit box face (ground: 1), 3 for an ellipsoid
        down = d[1] < 0
        depth[down] = -centre[1] / d[1][down]
        prim[down] = -2
        _draw_prims(self.scene.prims, self.cam, centre, rot, d, t, depth, prim, face)
        sky = prim == -1
        with np.errstate(invalid="ignore"):
            point = centre.astype(F32)[:, None, None] + depth * d
        ds = d[:, sky]
        point[:, sky] = ds / np.sqrt((ds * ds).sum(0))
        image, train_ids, group, vel, moving = shade(
            self.materials, self.cam.focal, t, centre, depth, prim, face, point
        )
        frame = RenderedFrame(t, centre, rot, image, train_ids, depth, group, point, vel, moving)
        draw_hood(self.scene.city.hood, frame)
        return frame


def _draw_prims(pr: dict, cam: Camera, centre, rot, d, t, depth, prim, face) -> None:
    """Z-buffer every primitive into (depth, prim, face), each over its projected bounding box only.

    `d` holds the rays as 3xHxW. Primitives go front to back (by their nearest corner), and one whose
    nearest corner is behind everything already drawn in its box is skipped: none of its hits could win.
    """
    box = pr["kind"][:, None] == BOX
    lo = pr["lo"] + pr["vel"] * t
    hi = np.where(box, pr["hi"] + pr["vel"] * t, pr["hi"])
    bmin, bmax = np.where(box, lo, lo - hi), np.where(box, hi, lo + hi)
    corners = np.stack([np.where(np.array(m, bool), bmax, bmin) for m in np.ndindex(2, 2, 2)], 1)  # N,8,3
    pc = (corners - centre) @ rot
    zmin = pc[..., 2].min(1)
    y0, y1, x0, x1 = _screen_boxes(pc, cam)
    todo = np.flatnonzero((x0 < x1) & (y0 < y1) & (zmin < FAR))
    inv = 1.0 / d
    rel_lo, rel_hi = (lo - centre).astype(F32)[:, :, None, None], (hi - centre).astype(F32)[:, :, None, None]
    for i in todo[np.argsort(zmin[todo], kind="stable")]:
        sl = (slice(y0[i], y1[i]), slice(x0[i], x1[i]))
        zb = depth[sl]
        if zb.max() <= zmin[i]:
            continue
        if box[i, 0]:
            tt, axis = _hit_box(inv[:, sl[0], sl[1]], rel_lo[i], rel_hi[i])
        else:
            tt, axis = _hit_ellipsoid(d[:, sl[0], sl[1]], centre, lo[i], hi[i]), None
        win = tt < zb
        zb[win] = tt[win]
        prim[sl][win] = i
        face[sl][win] = 3 if axis is None else axis[win]


# the 12 edges of a box as pairs of corner indices (corners ordered as np.ndindex(2, 2, 2))
_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1])


def _screen_boxes(pc: np.ndarray, cam: Camera):
    """Pixel rows/cols [y0, y1) x [x0, x1) covered by boxes given by their camera-space corners (N,8,3),
    each clipped to its part in front of the near plane (empty when nothing of it is in the image)."""
    pa, pb = pc[:, _EDGES[:, 0]], pc[:, _EDGES[:, 1]]
    za, zb = pa[..., 2], pb[..., 2]
    cross = (za - NEAR) * (zb - NEAR) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(cross, (NEAR - za) / (zb - za), 0.0)[..., None]
    pts = np.concatenate([pc, pa + s * (pb - pa)], 1)
    keep = np.concatenate([pc[..., 2] >= NEAR, cross], 1)
    z = np.where(keep, pts[..., 2], 1.0)
    x = cam.cx + cam.focal * pts[..., 0] / z
    y = cam.cy - cam.focal * pts[..., 1] / z
    big = np.float64(1e9)
    x0 = np.floor(np.where(keep, x, big).min(1)).clip(0, cam.width)
    x1 = (np.ceil(np.where(keep, x, -big).max(1)) + 1).clip(0, cam.width)
    y0 = np.floor(np.where(keep, y, big).min(1)).clip(0, cam.height)
    y1 = (np.ceil(np.where(keep, y, -big).max(1)) + 1).clip(0, cam.height)
    return y0.astype(int), y1.astype(int), x0.astype(int), x1.astype(int)


def _hit_box(inv, lo, hi):
    """Slab test on 3xhxw inverse ray directions, box corners relative to the camera (3x1x1): entry depth
    (inf on a miss) and the axis of the entered face."""
    t1, t2 = lo * inv, hi * inv
    tn = np.minimum(t1, t2)
    t_in, t_out = np.maximum.reduce(tn), np.minimum.reduce(np.maximum(t1, t2))
    axis = np.where(tn[0] == t_in, 0, np.where(tn[1] == t_in, 1, 2)).astype(np.int8)
    return np.where((t_in <= t_out) & (t_in > NEAR), t_in, np.inf), axis


def _hit_ellipsoid(d, centre, c, r):
    """Ray/ellipsoid entry depth on 3xhxw ray directions (inf on a miss, and when the camera is inside)."""
    o, rr = ((centre - c) / r).astype(F32), r.astype(F32)[:, None, None]
    cc = float(o @ o - 1.0)
    if cc <= 0:
        return np.full(d.shape[1:], np.inf, F32)
    dd = d / rr
    a = (dd * dd).sum(0)
    b = o[0] * dd[0] + o[1] * dd[1] + o[2] * dd[2]
    disc = b * b - a * cc
    tt = (-b - np.sqrt(np.maximum(disc, 0))) / a
    return np.where((disc > 0) & (tt > NEAR), tt, np.inf)


def flow(src: RenderedFrame, dst: RenderedFrame, cam: Camera) -> np.ndarray:
    """Exact flow src → dst (HxWx2 float32): where each src pixel's surface point is seen in dst; NaN where it
    leaves the image, is hidden in dst by another object (or the hood), or would exceed ±500 px."""
    from .shading import HOOD_GROUP, SKY_GROUP

    h, w = src.depth.shape
    sky, hood = src.group == SKY_GROUP, src.group == HOOD_GROUP
    moved = src.point.copy()
    moved[:, src.moving] += src.vel[:, src.moving] * F32(dst.t - src.t)
    pc = np.einsum("ji,jhw->ihw", dst.rot.astype(F32), moved)  # camera axes
    pc -= (dst.rot.T @ dst.centre).astype(F32)[:, None, None] * ~sky  # sky points are directions: rotation only
    z = pc[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (cam.cx + cam.focal * pc[0] / z).astype(F32)
        y = (cam.cy - cam.focal * pc[1] / z).astype(F32)
    u = x - np.arange(w, dtype=F32)[None, :]
    v = y - np.arange(h, dtype=F32)[:, None]
    with np.errstate(invalid="ignore"):
        inside = (z > NEAR) & (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5)
        inside &= (np.abs(u) < 500) & (np.abs(v) < 500)
    flat = np.where(
        inside,
        np.rint(np.where(inside, y, 0)).astype(np.int32) * w + np.rint(np.where(inside, x, 0)).astype(np.int32),
        0,
    )
    same = np.take(dst.group, flat) == src.group
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_src, inv_dst = np.where(sky, 0, 1 / z), 1 / np.take(dst.depth, flat)
    seen = sky | (np.abs(inv_dst - inv_src) <= 0.05 * inv_src + 1.5 / cam.focal)
    valid = inside & same & seen
    out = np.stack([np.where(valid, u, np.nan), np.where(valid, v, np.nan)], -1)
    out[hood] = 0.0  # the bonnet moves with the camera
    return out
