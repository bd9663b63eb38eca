"""Optical flow between two frames of a sequence: OpenCV DIS (cached), exact synthetic flow, precomputed files.

Convention (as in `flowio`): a flow a→b is float32 HxWx2 (u, v); the pixel at x in frame a is seen at
x + flow(x) in frame b; NaN marks an unknown vector. Warping with a flow is `data.warp.warp_backward`.

A `FlowSource` answers `source(dataset, ref_a, ref_b)` for any two frames of one sequence, and carries a
`name` that reports print, because TC depends on the flow used.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..core.errors import VssegError
from .datasets import FrameRef, SegmentationDataset
from .flowio import SUFFIXES, read_flow, write_flow
from .warp import warp_backward

DIS_PRESETS = ("ultrafast", "fast", "medium")
ETC_OFFSETS = (-2, -1, 1, 2, 3)  # ETC's neighbour offsets k: the temporal loss pairs frame t with t+k


# --- DIS and flow fields ---------------------------------------------------------------------------------


def dis_flow(img_a_bgr: np.ndarray, img_b_bgr: np.ndarray, preset: str = "medium", scale: float = 1.0) -> np.ndarray:
    """Forward flow a→b (HxWx2 float32) with OpenCV's DIS on the grayscale frames.

    `scale` < 1 computes on frames resized by that factor and returns the flow resized back to full size
    (about 1/scale² faster; Cityscapes' 1024x2048 frames take ~0.65 s per pair at scale 1 on one core).
    """
    import cv2

    if preset not in DIS_PRESETS:
        raise VssegError(f"DIS preset {preset!r} unknown; expected one of {DIS_PRESETS}")
    if img_a_bgr.shape[:2] != img_b_bgr.shape[:2]:
        raise VssegError(f"flow needs frames of one size, got {img_a_bgr.shape[:2]} and {img_b_bgr.shape[:2]}")
    dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))
    if not 0 < scale <= 1:
        raise VssegError(f"DIS scale must be in (0, 1], got {scale}")
    gray = [cv2.cvtColor(im, cv2.COLOR_BGR2GRAY) if im.ndim == 3 else im for im in (img_a_bgr, img_b_bgr)]
    hw = gray[0].shape[:2]
    if scale != 1:
        small = (max(8, round(hw[1] * scale)), max(8, round(hw[0] * scale)))
        gray = [cv2.resize(g, small, interpolation=cv2.INTER_AREA) for g in gray]
    flow = dis.calc(gray[0], gray[1], None).astype(np.float32, copy=False)
    return resize_flow(flow, hw) if flow.shape[:2] != hw else flow


def resize_flow(flow: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize a flow field to `hw` = (height, width): positions resampled linearly, vectors scaled with them."""
    import cv2

    h, w = hw
    sy, sx = h / flow.shape[0], w / flow.shape[1]
    out = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
    return (out * np.array([sx, sy], np.float32)).astype(np.float32)


def compose_flows(flows: list[np.ndarray]) -> np.ndarray:
    """Chain consecutive flows f_{0→1}, f_{1→2}, …: returns f_{0→n}; NaN where the chain leaves the frame."""
    total = flows[0].astype(np.float32, copy=True)
    for nxt in flows[1:]:
        step, valid = warp_backward(nxt, total, "linear", fill=np.nan)
        total = total + step
        total[~valid] = np.nan
    return total


# --- flow sources ------------------------------------------------------------------------------------------


class FlowSource:
    """Flow a→b between two frames of one sequence of a dataset; `name` goes into reports."""

    name: str = "flow"

    def __call__(self, dataset: SegmentationDataset, ref_a: FrameRef, ref_b: FrameRef) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _check_pair(ref_a: FrameRef, ref_b: FrameRef) -> None:
    if ref_a.sequence != ref_b.sequence:
        raise VssegError(f"flow between frames of different sequences: {ref_a.image.name} and {ref_b.image.name}")


class ExactFlow(FlowSource):
    """The synthetic set's exact flow: `flow/{split}/{city}/{stem}_flow_fw.png` (t→t+1) and `_flow_bw.png`
    (t+1→t), both stored under frame t's stem. Offsets |k|>1 chain the consecutive flows."""

    name = "exact synthetic flow"

    def __call__(self, dataset, ref_a, ref_b):
        _check_pair(ref_a, ref_b)
        k = ref_b.index - ref_a.index
        hw = dataset.image_hw(ref_a)
        if k == 0:
            return np.zeros((*hw, 2), np.float32)
        step = 1 if k > 0 else -1
        flows = []
        for t in range(ref_a.index, ref_b.index, step):
            # t→t+1 is frame t's fw; t→t-1 is frame (t-1)'s bw
            owner, direction = (t, "fw") if step > 0 else (t - 1, "bw")
            flows.append(read_flow(self.flow_path(dataset, ref_a, owner, direction), expected_hw=hw))
        return compose_flows(flows)

    @staticmethod
    def flow_path(dataset: SegmentationDataset, ref: FrameRef, index: int, direction: str) -> Path:
        city = ref.image.parent.name
        return dataset.root / "flow" / dataset.split / city / f"{ref.sequence}_{index:06d}_flow_{direction}.png"


class DISFlow(FlowSource):
    """OpenCV DIS flow, cached under `cache_dir` (None: no cache) as KITTI `.png` (default: 1/64-px precise,
    several times smaller than float32; a field with |flow| >= 512 px goes to `.npy`) or `.npy` (exact).

    The cache key is the sha1 of both image paths, their sizes and mtimes, the DIS preset and OpenCV's
    version, so a changed frame or setting never reuses a stale flow.
    """

    def __init__(
        self, preset: str = "medium", cache_dir: str | Path | None = None, cache_format: str = "png", scale: float = 1.0
    ):
        if preset not in DIS_PRESETS:
            raise VssegError(f"DIS preset {preset!r} unknown; expected one of {DIS_PRESETS}")
        if cache_format not in ("npy", "png"):
            raise VssegError(f"flow cache format {cache_format!r} unknown; expected 'npy' or 'png'")
        self.preset = preset
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.cache_format = cache_format
        if not 0 < scale <= 1:
            raise VssegError(f"DIS scale must be in (0, 1], got {scale}")
        self.scale = float(scale)
        self.name = f"OpenCV DIS ({preset})" if scale == 1 else f"OpenCV DIS ({preset}, at {scale:g}x size)"
        self.computed = 0  # counters for reports and tests
        self.hits = 0

    def cache_key(self, path_a: Path, path_b: Path) -> str:
        import cv2

        parts = ["dis", self.preset, cv2.__version__] + ([f"scale={self.scale!r}"] if self.scale != 1 else [])
        for p in (Path(path_a).resolve(), Path(path_b).resolve()):
            st = p.stat()
            parts += [str(p), str(st.st_size), str(st.st_mtime_ns)]
        return hashlib.sha1("\0".join(parts).encode()).hexdigest()

    def cache_path(self, path_a: Path, path_b: Path) -> Path | None:
        if self.cache_dir is None:
            return None
        key = self.cache_key(path_a, path_b)
        return self.cache_dir / key[:2] / f"{key}.{self.cache_format}"

    def _store(self, entry: Path, flow: np.ndarray) -> np.ndarray:
        """Write a cache entry and return the flow as a later hit will read it (PNG is 1/64-px quantised),
        so a run gives the same numbers whether the cache was cold or warm."""
        try:
            write_flow(entry, flow)
        except ValueError:  # beyond the KITTI PNG range
            entry = entry.with_suffix(".npy")
            write_flow(entry, flow)
        return read_flow(entry)

    def __call__(self, dataset, ref_a, ref_b):
        _check_pair(ref_a, ref_b)
        return self.cached(ref_a.image, ref_b.image, lambda: (dataset.read_image(ref_a), dataset.read_image(ref_b)))

    def cached(self, path_a: Path, path_b: Path, load=None) -> np.ndarray:
        """Flow between two image files, from the cache when a valid entry exists; `load()` returns the
        two BGR frames (default: read the files)."""
        from ..core.fileio import read_image

        entry = self.cache_path(path_a, path_b)
        for found in (entry, entry.with_suffix(".npy")) if entry is not None else ():
            if found.is_file():
                try:
                    flow = read_flow(found)
                    self.hits += 1
                    return flow
                except VssegError:
                    pass  # a damaged cache entry is recomputed and replaced
        img_a, img_b = load() if load else (read_image(path_a), read_image(path_b))
        flow = dis_flow(img_a, img_b, self.preset, self.scale)
        self.computed += 1
        return self._store(entry, flow) if entry is not None else flow


class PrecomputedFlow(FlowSource):
    """Flow files in one directory named `{stem_a}__{stem_b}.{flo,npy,png}`, where a stem is the image file
    name without its extension, e.g. `aachen_000001_000019_leftImg8bit__aachen_000001_000020_leftImg8bit.flo`
    for the flow from frame 19 to frame 20 (rename FlowNet2 / RAFT outputs to this pattern)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise VssegError(f"{self.directory}: flow directory not found")
        self.name = f"precomputed ({self.directory})"

    def path_for(self, ref_a: FrameRef, ref_b: FrameRef) -> Path:
        base = f"{ref_a.image.stem}__{ref_b.image.stem}"
        for suffix in SUFFIXES:
            path = self.directory / f"{base}{suffix}"
            if path.is_file():
                return path
        raise VssegError(
            f"{self.directory}: no flow file {base}{{{','.join(SUFFIXES)}}} for {ref_a.image.name} → {ref_b.image.name}"
        )

    def __call__(self, dataset, ref_a, ref_b):
        _check_pair(ref_a, ref_b)
        return read_flow(self.path_for(ref_a, ref_b), expected_hw=dataset.image_hw(ref_a))


def flow_cache_dir(explicit: str | Path | None = None) -> Path:
    """The DIS flow cache: `explicit` when given, else the user cache (`core.cache.user_cache_dir("flow")`),
    the one folder training, `eval`, `bench` and `vsseg-edge data flow` share."""
    from ..core.cache import user_cache_dir

    return Path(explicit) if explicit is not None else user_cache_dir("flow")


def open_flow_source(spec: str, dataset: SegmentationDataset, cache_dir=None, preset: str = "medium") -> FlowSource:
    """`spec`: "exact" | "dis" | "auto" (exact for the synthetic set, else DIS) | a directory of flow files.

    DIS flow is cached in `cache_dir`, default `flow_cache_dir()`."""
    if spec == "auto":
        spec = "exact" if dataset.name == "synthetic" else "dis"
    if spec == "exact":
        if not (dataset.root / "flow").is_dir():
            raise VssegError(
                f"{dataset.root}: no flow/ folder; exact flow exists only for the synthetic set (use 'dis')"
            )
        return ExactFlow()
    if spec == "dis":
        return DISFlow(preset, flow_cache_dir(cache_dir))
    if Path(spec).is_dir():
        return PrecomputedFlow(spec)
    raise VssegError(f"flow source {spec!r}: expected 'exact', 'dis', 'auto' or an existing directory of flow files")


# --- precomputation ----------------------------------------------------------------------------------------


def flow_pairs(
    dataset: SegmentationDataset, offsets=ETC_OFFSETS, consecutive: bool = True
) -> list[tuple[FrameRef, FrameRef]]:
    """The (a, b) pairs training and TC ask for: each anchor frame (the labelled ones; every frame of
    unlabelled video) with its neighbours at `offsets` (flow t→t+k), and, with `consecutive`, every (t, t+1)
    pair of every sequence."""
    pairs: dict[tuple[Path, Path], tuple[FrameRef, FrameRef]] = {}
    for ref in dataset.anchor_frames():
        for k in offsets:
            nb = dataset.neighbour(ref, k)
            if nb is not None and k != 0:
                pairs.setdefault((ref.image, nb.image), (ref, nb))
    if consecutive:
        for refs in dataset.sequences.values():
            for ref in refs:
                nb = dataset.neighbour(ref, 1)
                if nb is not None:
                    pairs.setdefault((ref.image, nb.image), (ref, nb))
    return list(pairs.values())


_WORKER: dict = {}  # per worker process: the source and dataset, sent once instead of with every pair


def _init_worker(source: FlowSource, dataset: SegmentationDataset) -> None:
    """Each worker runs DIS on one thread, so `workers` processes share the cores without oversubscribing."""
    import cv2

    cv2.setNumThreads(1)
    _WORKER.update(source=source, dataset=dataset)


def _compute_pair(pair, source: FlowSource | None = None, dataset: SegmentationDataset | None = None) -> bool:
    """Compute (or find cached) one pair's flow; True if it had to be computed."""
    source = _WORKER["source"] if source is None else source
    dataset = _WORKER["dataset"] if dataset is None else dataset  # (an unlabelled dataset has len 0)
    before = getattr(source, "computed", 0)
    source(dataset, *pair)
    return getattr(source, "computed", 0) > before


def precompute_flows(
    dataset: SegmentationDataset,
    source: FlowSource,
    offsets=ETC_OFFSETS,
    progress: bool = True,
    consecutive: bool = True,
    workers: int = 1,
) -> dict:
    """Fill a DIS cache for the pairs of `flow_pairs`; returns {"pairs", "computed", "cached"}.

    With `workers` > 1 the pairs are spread over processes (each worker writes its own cache entries,
    atomically, so concurrent runs are safe).
    """
    from tqdm import tqdm

    pairs = flow_pairs(dataset, offsets, consecutive)
    if isinstance(source, DISFlow) and source.cache_dir is None:
        raise VssegError("precomputing DIS flow needs a cache directory")
    bar = dict(total=len(pairs), desc=f"flow ({source.name})", unit="pair", disable=not progress)
    if workers > 1:
        # spawn, not fork: forking a process whose OpenCV thread pool is running can deadlock
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(source, dataset)) as pool:
            done = list(tqdm(pool.map(_compute_pair, pairs, chunksize=8), **bar))
    else:
        done = [_compute_pair(pair, source, dataset) for pair in tqdm(pairs, **bar)]
    computed = int(sum(done))
    return {"pairs": len(pairs), "computed": computed, "cached": len(pairs) - computed}
