"""Training samples for ETC: a labelled frame t with its neighbour frames and the flow to each (`TrainClips`),
and unlabelled video pairs for the temporal loss and distillation (`VideoPairs`).

A sample is drawn deterministically from (seed, sample number), so a resumed run sees exactly the batches
the interrupted one would have seen. Every array of one sample (frame, label, neighbours, flows) goes
through ONE draw of the paired augmentation, as the temporal loss needs.

    neighbours "none":    frame t only (baseline)
    neighbours "one":     t and t+k, k drawn from the recipe's offsets (ETC: +3, +2, +1, −1, −2)
    neighbours "triplet": t−k, t, t+k with k > 0 drawn from |offsets| (multi-frame / neighbour KD)

Flows are forward flows from frame t to each neighbour (the pixel x of t is at x + f(x) there), which is
what warping a neighbour's output back to t needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import VssegError
from ..core.preprocess import PreprocessSpec, normalize
from ..data.datasets import FrameRef, SegmentationDataset
from ..data.flow import ETC_OFFSETS, FlowSource
from ..data.transforms import PairedAugment

NEIGHBOUR_MODES = ("none", "one", "triplet")


@dataclass(frozen=True)
class ClipSpec:
    neighbours: str = "none"
    offsets: tuple[int, ...] = ETC_OFFSETS


class TrainClips:
    """A map-style dataset indexed by (frame index, augmentation seed) pairs (see `SampleStream`)."""

    def __init__(
        self,
        dataset: SegmentationDataset,
        flow_source: FlowSource | None,
        augment: PairedAugment,
        spec: PreprocessSpec,
        clip: ClipSpec,
    ):
        if clip.neighbours not in NEIGHBOUR_MODES:
            raise ValueError(f"neighbours must be one of {NEIGHBOUR_MODES}")
        self.dataset, self.flow_source, self.augment, self.spec, self.clip = dataset, flow_source, augment, spec, clip
        self.refs = dataset.labelled()
        if not self.refs:
            raise VssegError(f"{dataset.root}: split {dataset.split!r} has no labelled frames to train on")
        self.choices = [neighbour_choices(dataset, r, clip) for r in self.refs]
        if clip.neighbours != "none":
            usable = sum(bool(c) for c in self.choices)
            if usable == 0:
                raise VssegError(
                    f"{dataset.root}: no labelled frame of split {dataset.split!r} has neighbour frames at offsets "
                    f"{list(clip.offsets)}; the temporal loss and KD over frames need sequences "
                    "(leftImg8bit_sequence), or set their weights to 0"
                )
            self.refs = [r for r, c in zip(self.refs, self.choices) if c]
            self.choices = [c for c in self.choices if c]
            if flow_source is None:
                raise ValueError("neighbour clips need a flow source")

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        import torch

        index, seed = key
        rng = np.random.default_rng(seed)
        ref = self.refs[index]
        offsets = self.choices[index][int(rng.integers(len(self.choices[index])))]
        image = self.dataset.read_image(ref)
        label = self.dataset.read_label(ref)
        params = self.augment.sample(rng, image.shape[:2])
        sample = {
            "image": torch.from_numpy(normalize(self.augment.apply_image(params, image), self.spec)),
            "label": torch.from_numpy(self.augment.apply_label(params, label).astype(np.int64)),
        }
        if offsets:
            nbs, flows = [], []
            for k in offsets:
                nref = self.dataset.neighbour(ref, k)
                nb = self.dataset.read_image(nref)
                flow = self.flow_source(self.dataset, ref, nref)
                nbs.append(normalize(self.augment.apply_image(params, nb), self.spec))
                flows.append(self.augment.apply_flow(params, flow).transpose(2, 0, 1))
            sample["neighbours"] = torch.from_numpy(np.stack(nbs))
            sample["flows"] = torch.from_numpy(np.ascontiguousarray(np.stack(flows), dtype=np.float32))
            sample["offsets"] = torch.tensor(offsets)
        return sample


def neighbour_choices(ds: SegmentationDataset, ref: FrameRef, clip: ClipSpec) -> list[tuple[int, ...]]:
    """Offset tuples usable for frame `ref` in the clip's neighbour mode."""
    if clip.neighbours == "none":
        return [()]
    if clip.neighbours == "one":
        return [(k,) for k in clip.offsets if k != 0 and ds.neighbour(ref, k) is not None]
    ks = sorted({abs(k) for k in clip.offsets if k != 0})
    return [(-k, k) for k in ks if ds.neighbour(ref, -k) is not None and ds.neighbour(ref, k) is not None]


class SampleStream:
    """Batches of (frame index, augmentation seed), deterministic from (seed, position): resumable exactly.

    Epoch e visits a permutation of the frames seeded by (seed, e); sample n of the run gets seed (seed, n).
    With `rank`/`world`, each process takes every world-th sample (DistributedSampler-style).
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, start_batch: int = 0, rank: int = 0, world: int = 1):
        self.n, self.bs, self.seed = num_items, batch_size, seed
        self.start, self.rank, self.world = start_batch, rank, world

    def __iter__(self):
        b = self.start
        while True:
            first = (b * self.world + self.rank) * self.bs
            yield [self._item(first + j) for j in range(self.bs)]
            b += 1

    def _item(self, n: int) -> tuple[int, int]:
        epoch, pos = divmod(n, self.n)
        perm = np.random.default_rng((self.seed, epoch)).permutation(self.n)
        return int(perm[pos]), int(np.random.SeedSequence((self.seed, n)).generate_state(1)[0])


class VideoPairs:
    """Unlabelled training samples from video: frame t and t+k of a clip (k drawn from the offsets), no label.

    A map-style dataset indexed like `TrainClips` by (frame index, augmentation seed). Each frame is first
    brought to the model's input geometry the way inference does (`PreprocessSpec` stretch to height×width,
    the flow resized with its vectors scaled), so a 1920×1080 camera frame and a 480×360 CamVid frame show
    objects at the scale the model runs at; then the labelled data's paired augmentation is applied to both
    frames and the flow with ONE draw. The flow t → t+k comes from the flow source (DIS, cached on disk) at
    the frames' own resolution. `neighbours` is "one" (t, t+k) or "triplet" (t−k, t, t+k), as in `ClipSpec`,
    or "none" (frame t alone: enough for the per-frame terms, e.g. its fused target).

    With `targets` (`train.targets.FusedTargets`), every sample also holds frame t's fused distillation target
    ("target", C×h×w probabilities) under the same augmentation draw, NaN where the crop has no source pixel.
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        flow_source: FlowSource | None,
        augment: PairedAugment,
        spec: PreprocessSpec,
        clip: ClipSpec,
        targets=None,
    ):
        if clip.neighbours not in NEIGHBOUR_MODES:
            raise ValueError(f"neighbours must be one of {NEIGHBOUR_MODES}")
        if clip.neighbours != "none" and flow_source is None:
            raise ValueError("video pairs need a flow source")
        check = getattr(dataset, "check_offsets", None)
        if check is not None and clip.neighbours != "none":
            check(clip.offsets)  # a clip shorter than the largest offset is a one-line error naming it
        self.dataset, self.flow_source, self.augment, self.spec, self.clip = dataset, flow_source, augment, spec, clip
        self.targets = targets
        refs = dataset.anchor_frames()
        choices = [neighbour_choices(dataset, r, clip) for r in refs]
        self.refs = [r for r, c in zip(refs, choices) if c]
        self.choices = [c for c in choices if c]
        if not self.refs:
            raise VssegError(f"{dataset.root}: no frame has neighbours at offsets {list(clip.offsets)}")

    def __len__(self) -> int:
        return len(self.refs)

    def _model_geometry(self, image: np.ndarray) -> np.ndarray:
        import cv2

        if self.spec.resize != "stretch" or image.shape[:2] == self.spec.size:
            return image
        return cv2.resize(image, (self.spec.width, self.spec.height), interpolation=cv2.INTER_AREA)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        import torch

        from ..data.flow import resize_flow

        index, seed = key
        rng = np.random.default_rng(seed)
        ref = self.refs[index]
        offsets = self.choices[index][int(rng.integers(len(self.choices[index])))]
        image = self._model_geometry(self.dataset.read_image(ref))
        params = self.augment.sample(rng, image.shape[:2])
        nbs, flows = [], []
        for k in offsets:
            nref = self.dataset.neighbour(ref, k)
            flow = self.flow_source(self.dataset, ref, nref)
            if flow.shape[:2] != image.shape[:2]:
                flow = resize_flow(flow, image.shape[:2])
            nbs.append(
                normalize(
                    self.augment.apply_image(params, self._model_geometry(self.dataset.read_image(nref))), self.spec
                )
            )
            flows.append(self.augment.apply_flow(params, flow).transpose(2, 0, 1))
        sample = {"image": torch.from_numpy(normalize(self.augment.apply_image(params, image), self.spec))}
        if offsets:
            sample["neighbours"] = torch.from_numpy(np.stack(nbs))
            sample["flows"] = torch.from_numpy(np.ascontiguousarray(np.stack(flows), dtype=np.float32))
            sample["offsets"] = torch.tensor(offsets)
        if self.targets is not None:
            target = self.augment.apply_probs(params, self.targets.load(ref))
            sample["target"] = torch.from_numpy(np.ascontiguousarray(target.transpose(2, 0, 1)))
        return sample
