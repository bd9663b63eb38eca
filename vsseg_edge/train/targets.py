"""Temporally fused self-distillation targets for unlabelled video, computed once and cached on disk.

For every frame t of a clip, a frozen teacher's softmax on t and on its neighbours t+k (k in `offsets`, e.g.
±1, ±2), each warped into t with the flow t → t+k, weighted per pixel and averaged:

    q̄_t(x) = (q_t(x) + Σ_k w_k(x) · q̂_k(x)) / (1 + Σ_k w_k(x))
    q̂_k    = warp(q_{t+k}, F_{t→t+k})                     bilinear: the temporal loss's `flow_warp`
    w_k(x) = V_k(x) · M_k(x)^p                              p = `mask_power`
    V_k(x) = 1 where F(x) is finite and lands inside the frame, else 0   (`flow_validity`)
    M_k(x) = exp(−|Σ_c (I_t − Î_k)_c(x)| / σ)               ETC's photometric mask (`photometric_weight`)

The result is a sliding temporal ensemble of the teacher: a class that one frame shows and its neighbours do
not (flicker) is voted down, a region the flow cannot follow (occluded, out of frame, badly warped) keeps the
frame's own prediction, and where nothing moves q̄_t is q_t. Frame t itself always has weight 1, so a pixel
without any usable neighbour gets the teacher's single-frame target, never nothing.

Images for M are the frames at the model's input geometry in 0–255 grey levels divided by σ (57.375, ImageNet's
std on that scale, the scale of the normalised images ETC's code feeds its mask), not the model's own
normalisation: with the published ESPNet normalisation (a further /255) every difference would be ~0 and M ~1.
The signed sum over channels is ETC's formula, kept so that the two uses of the mask agree.

Why precompute: the teacher is frozen, so q̄ never changes during training. Computing it once per clip (teacher
forwards on every frame, the flows from the shared DIS cache) leaves training one student forward/backward per
frame, with no teacher and no neighbour frames in the step. Targets are stored at the model's input geometry
(the frame stretched to height × width as inference does) as uint8 probabilities (q̄ · 255 rounded,
renormalised when read; 1/255 steps are far below what the loss can resolve), one compressed `.npz` per frame.

Cache: `<cache>/<key[:2]>/<key>.npz`, the key a sha1 of the teacher's sha256, the preprocessing, the fusion
settings, the flow source's name and the path, size and mtime of frame t and of every neighbour used — a changed
frame, teacher or setting never reuses a stale target. Entries are written atomically (`core.fileio`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core.errors import VssegError
from ..data.datasets import FrameRef, SegmentationDataset
from ..data.flow import FlowSource

TARGETS_VERSION = 1  # bump when the fusion or the storage changes, so old cache entries are not reused
PHOTOMETRIC_SIGMA = 57.375  # grey levels: ImageNet's std on the 0–255 scale (ETC's normalised-image mask)


@dataclass(frozen=True)
class FusionSpec:
    """How the teacher's neighbouring predictions are fused into frame t's target."""

    offsets: tuple[int, ...] = (-2, -1, 1, 2)  # neighbours t+k fused into t (0 is t itself, always in)
    sigma: float = PHOTOMETRIC_SIGMA  # photometric scale of M, in grey levels
    mask_power: float = 1.0  # p in w = V · M^p (2: ETC's loss squares its mask)

    def __post_init__(self):
        object.__setattr__(self, "offsets", tuple(int(k) for k in self.offsets if int(k) != 0))
        if self.sigma <= 0 or self.mask_power < 0:
            raise VssegError(
                f"target fusion: sigma must be > 0 and mask_power >= 0, got {self.sigma}, {self.mask_power}"
            )


def fuse_probabilities(probs_t, image_t, neighbours, spec: FusionSpec = FusionSpec()):
    """q̄_t (N×C×H×W) from frame t's probabilities and `neighbours` = [(probs_n, image_n, flow_t→n), …].

    Images are N×3×H×W in grey levels (0–255), flows N×2×H×W in pixels at the probabilities' size. Returns
    (q̄_t, total neighbour weight Σ_k w_k as N×1×H×W) — the second for reports and tests.
    """
    import torch

    from .losses.temporal import photometric_weight
    from .losses.warp import flow_validity, flow_warp

    total = probs_t.clone()
    weight_sum = torch.zeros_like(probs_t[:, :1])
    for probs_n, image_n, flow in neighbours:
        if flow.shape[-2:] != probs_t.shape[-2:] or image_n.shape[-2:] != probs_t.shape[-2:]:
            raise VssegError(
                f"target fusion: flow {tuple(flow.shape)} / image {tuple(image_n.shape)} do not match "
                f"the probabilities {tuple(probs_t.shape)}"
            )
        valid = flow_validity(flow, exclude_out_of_frame=True)
        m = photometric_weight(image_t / spec.sigma, flow_warp(image_n, flow) / spec.sigma)
        w = valid * m**spec.mask_power
        total = total + w * flow_warp(probs_n, flow)
        weight_sum = weight_sum + w
    return total / (1.0 + weight_sum), weight_sum


class FusedTargets:
    """The fused targets of every frame of a video dataset: `build()` fills the cache, `load(ref)` reads one.

    `teacher` is a frozen model (logits at its input size), `teacher_id` what identifies its weights in the
    cache key (a checkpoint's sha256). Frames go through the model's preprocessing (`spec`); the flow source
    answers flows between frames of the dataset (DIS, cached), resized to the model's geometry here.
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        teacher,
        teacher_id: str,
        spec,
        flow_source: FlowSource,
        fusion: FusionSpec = FusionSpec(),
        cache_dir: str | Path | None = None,
        device: str = "cpu",
    ):
        from ..core.cache import user_cache_dir

        self.dataset, self.teacher, self.teacher_id = dataset, teacher, teacher_id
        self.spec, self.flow_source, self.fusion, self.device = spec, flow_source, fusion, device
        self.cache_dir = Path(cache_dir) if cache_dir is not None else user_cache_dir("targets")
        self._settings = json.dumps(
            {
                "version": TARGETS_VERSION,
                "teacher": teacher_id,
                "spec": spec.to_dict(),
                "fusion": asdict(fusion),
                "flow": flow_source.name,
            },
            sort_keys=True,
        )
        self.computed = 0
        self.cached = 0

    @classmethod
    def from_checkpoint(
        cls,
        dataset,
        checkpoint: str | Path,
        spec,
        flow_source,
        fusion=FusionSpec(),
        cache_dir=None,
        device: str = "cpu",
        num_classes: int | None = None,
    ) -> FusedTargets:
        from ..core.hashcache import file_sha256
        from ..models.checkpoint import model_from_checkpoint

        model, _ = model_from_checkpoint(checkpoint, num_classes=num_classes)
        model = model.to(device).eval().requires_grad_(False)
        return cls(dataset, model, file_sha256(checkpoint), spec, flow_source, fusion, cache_dir, device)

    # ------------------------------------------------------------------ the cache

    def neighbours(self, ref: FrameRef) -> list[tuple[int, FrameRef]]:
        """The (k, neighbour) pairs fused into `ref`'s target (offsets beyond the clip are left out)."""
        out = []
        for k in self.fusion.offsets:
            nb = self.dataset.neighbour(ref, k)
            if nb is not None:
                out.append((k, nb))
        return out

    def key(self, ref: FrameRef) -> str:
        parts = [self._settings]
        for k, r in [(0, ref), *self.neighbours(ref)]:
            p = Path(r.image).resolve()
            st = p.stat()
            parts.append(f"{k}:{p}:{st.st_size}:{st.st_mtime_ns}")
        return hashlib.sha1("\0".join(parts).encode()).hexdigest()

    def path(self, ref: FrameRef) -> Path:
        key = self.key(ref)
        return self.cache_dir / key[:2] / f"{key}.npz"

    def load(self, ref: FrameRef) -> np.ndarray:
        """The target of `ref` as float32 H×W×C probabilities at the model's geometry (built if missing)."""
        path = self.path(ref)
        if not path.is_file():
            if self.teacher is None:
                raise VssegError(
                    f"{ref.image}: no fused target in {self.cache_dir} (the cache was cleared or the "
                    "frame changed after the targets were built); run again to rebuild them"
                )
            self._build_sequence(self.dataset.sequences[ref.sequence], only={ref.index})
        try:
            with np.load(path) as npz:
                q = npz["probs"].astype(np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise VssegError(f"{path}: damaged fused-target cache entry ({exc}); delete it to rebuild") from None
        return q / q.sum(axis=2, keepdims=True)

    def build(self, progress: bool = False) -> dict:
        """Compute every missing target; returns {"frames", "computed", "cached"}."""
        from tqdm.auto import tqdm

        before = self.computed
        total = sum(len(refs) for refs in self.dataset.sequences.values())
        with tqdm(total=total, desc="fused targets", unit="frame", disable=not progress) as bar:
            for refs in self.dataset.sequences.values():
                self._build_sequence(refs, bar=bar)
        computed = self.computed - before
        return {"frames": total, "computed": computed, "cached": total - computed}

    # ------------------------------------------------------------------ computing

    def _build_sequence(self, refs: list[FrameRef], only: set[int] | None = None, bar=None) -> None:
        """Targets of one sequence in order, each teacher prediction computed once and kept while a later
        frame may still need it (a window of the largest negative offset)."""
        from ..core.fileio import atomic_write

        back = max([-k for k in self.fusion.offsets if k < 0], default=0)
        memo: dict[int, tuple] = {}  # position in the sequence → (probs, image) on the device
        position = {r.index: i for i, r in enumerate(refs)}
        for i, ref in enumerate(refs):
            for j in [j for j in memo if j < i - back]:
                del memo[j]
            if only is not None and ref.index not in only:
                continue
            path = self.path(ref)
            if path.is_file():
                self.cached += 1
            else:
                q, _ = self.fuse(ref, memo, position)
                u8 = np.rint(q[0].permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
                with atomic_write(path, "wb") as fh:
                    np.savez_compressed(fh, probs=u8)
                self.computed += 1
            if bar is not None:
                bar.update(1)

    def fuse(self, ref: FrameRef, memo: dict | None = None, position: dict | None = None):
        """(q̄, Σw) of one frame as tensors (1×C×H×W, 1×1×H×W), computed now (no cache)."""
        import torch

        from ..data.flow import resize_flow

        memo = {} if memo is None else memo
        position = position or {}
        probs_t, image_t = self._predict(ref, memo, position)
        hw = tuple(probs_t.shape[-2:])
        nbs = []
        for _, nb in self.neighbours(ref):
            probs_n, image_n = self._predict(nb, memo, position)
            flow = self.flow_source(self.dataset, ref, nb)
            if flow.shape[:2] != hw:
                flow = resize_flow(flow, hw)
            flow = torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1)))[None].to(self.device)
            nbs.append((probs_n, image_n, flow))
        return fuse_probabilities(probs_t, image_t, nbs, self.fusion)

    def _predict(self, ref: FrameRef, memo: dict, position: dict):
        """The teacher's softmax (1×C×H×W) and the frame in grey levels (1×3×H×W), at the model's geometry."""
        import torch

        from ..core.preprocess import normalize, resize_frame

        slot = position.get(ref.index, ("ref", ref.image))
        if slot in memo:
            return memo[slot]
        frame = resize_frame(self.dataset.read_image(ref), self.spec)
        x = torch.from_numpy(normalize(frame, self.spec))[None].to(self.device)
        with torch.no_grad():
            logits = self.teacher(x)
        if tuple(logits.shape[-2:]) != tuple(frame.shape[:2]):
            raise VssegError(
                f"fused targets: the teacher answers {tuple(logits.shape[-2:])} for an input of "
                f"{frame.shape[:2]}; it must return logits at its input size"
            )
        image = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1), dtype=np.float32))[None]
        memo[slot] = (torch.softmax(logits.float(), dim=1), image.to(self.device))
        return memo[slot]
