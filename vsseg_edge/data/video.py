"""Unlabelled video as a dataset: video files and folders of consecutive frames, one sequence per clip.

Users have footage from their own cameras, not labels. This reader turns it into the same
`SegmentationDataset` every consumer already takes (training pairs for the temporal loss and distillation,
DIS flow, calibration frames, TC), with no labelled frame:

    root = clip.mp4                one video file                        → one sequence
    root = frames/                 a folder of consecutive image files   → one sequence
    root = clips/                  video files and/or frame folders      → one sequence per clip

Frames are ordered by natural sort (frame_2 before frame_10); a sequence's `index` is the frame's position
(0, 1, 2 …), so `neighbour(ref, k)` is the frame k positions away, as ETC's offsets mean. A sequence is
named after its clip (the video file's stem, the frame folder's name).

Video files are decoded ONCE into a frame cache (`frames_cache_dir()`, under the user cache folder, never
/tmp), one folder per clip keyed by the file's resolved path, size, mtime and the decoder settings (image
format, OpenCV version). The folder is written under a temporary name and renamed into place only when
every frame is written, so a consumer sees a complete clip or none, and an interrupted decode leaves
nothing behind. From then on every consumer reads image files: the DIS flow cache keys its entries by those
files, training reads them at random, and a decoded clip is never decoded twice. Cached frames are named
`000000.png`, `000001.png` … (lossless PNG), as `vsseg-edge run --source clip.mp4 --save-masks` names its
masks, so `vsseg-edge eval` finds the predictions of a clip by name.

Timestamps (seconds) are optional: a frame folder may hold `timestamps.json` (a list with one number per
frame in order, or an object mapping frame file names to numbers); a video file's come from the decoder.

Bad input is a one-line error naming the file: a clip that does not decode, a frame that fails to decode
in the middle of a clip, frames of mixed sizes in one folder, an empty folder, a clip with fewer than two
frames, timestamps that do not fit the frames, or (`check_offsets`) a clip shorter than the largest
temporal offset. A clip has no labels, so the dataset's class set is nominal (Cityscapes by default);
consumers that count classes (TC) set the model's with `with_label_set`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.cache import user_cache_dir
from ..core.errors import VssegError
from ..core.labels import CITYSCAPES, LabelSet
from .datasets import IMAGE_SUFFIXES, FrameRef, SegmentationDataset, _png_hw, list_images, natural_key

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
TIMESTAMPS_FILE = "timestamps.json"
CLIP_FILE = "clip.json"  # written into a decoded clip's cache folder: source, settings, fps, timestamps
FRAME_FORMATS = ("png",)  # lossless: cached frames are the decoder's pixels, bit for bit
DECODER_VERSION = 1  # bump when the decoding or naming changes, so old cache folders are not reused
_STALE_TMP_SECONDS = 3600.0  # a temporary decode folder this old was left by a killed process


def frames_cache_dir() -> Path:
    """`$VSSEG_EDGE_CACHE/frames`, else `$XDG_CACHE_HOME/vsseg-edge/frames`, else `~/.cache/vsseg-edge/frames`."""
    return user_cache_dir("frames")


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def looks_like_video_root(root: Path) -> bool:
    """True when `root` is a video file, or a folder without images of its own that holds video files or
    frame folders (what `detect_kind` calls "video"; a folder of images stays the "images" kind)."""
    root = Path(root)
    if root.is_file():
        return is_video_file(root)
    if not root.is_dir() or _list_frames(root):
        return False
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    return any(is_video_file(p) for p in entries) or any(p.is_dir() and _list_frames(p) for p in entries)


@dataclass(frozen=True)
class Clip:
    """One clip: where it came from, its frame files in order, and optional per-frame timestamps (s)."""

    name: str
    source: Path  # the video file or the frame folder the user named
    frames: tuple[Path, ...]
    timestamps: tuple[float, ...] | None = None
    fps: float | None = None


class VideoDataset(SegmentationDataset):
    """Unlabelled clips as sequences; `clips[name]` keeps each clip's source, timestamps and frame rate."""

    def __init__(self, root: Path, split: str, clips: list[Clip], label_set: LabelSet = CITYSCAPES):
        sequences = {c.name: [FrameRef(c.name, i, p, None) for i, p in enumerate(c.frames)] for c in clips}
        super().__init__("video", root, split, label_set, sequences, neighbour_by="position")
        self.clips = {c.name: c for c in clips}

    def with_label_set(self, label_set: LabelSet) -> VideoDataset:
        """The same clips under another class set (the model's), for consumers that count classes (TC)."""
        return VideoDataset(self.root, self.split, list(self.clips.values()), label_set)

    def anchor_frames(self) -> list[FrameRef]:
        """Every frame: without labels, any frame can be frame t of a (t, t+k) pair."""
        return self.frames()

    def timestamp(self, ref: FrameRef) -> float | None:
        """The frame's time in seconds, when the clip has timestamps."""
        ts = self.clips[ref.sequence].timestamps
        return ts[ref.index] if ts is not None else None

    def check_offsets(self, offsets) -> None:
        """Refuse a clip too short for the largest |offset| (no frame of it could pair at that offset)."""
        need = max((abs(int(k)) for k in offsets), default=0) + 1
        for clip in self.clips.values():
            if len(clip.frames) < need:
                raise VssegError(
                    f"{clip.source}: clip has {len(clip.frames)} frames, fewer than the "
                    f"{need} that the largest temporal offset {need - 1} needs"
                )


def open_video(
    root, split: str = "train", *, cache_dir: str | Path | None = None, label_set: LabelSet = CITYSCAPES
) -> VideoDataset:
    """Open a video file, a frame folder or a folder of clips (see the module docstring).

    `split` is recorded, not used: clips have no splits; point training and evaluation at different
    folders (or files) to hold footage out.
    """
    root = Path(root)
    if not root.exists():
        raise VssegError(f"{root}: not found (expected a video file, a folder of frames or a folder of clips)")
    cache = Path(cache_dir) if cache_dir is not None else frames_cache_dir()
    if root.is_file():
        if not is_video_file(root):
            raise VssegError(f"{root}: not a video file (expected one of {VIDEO_SUFFIXES}) or a folder")
        clips = [decode_clip(root, cache)]
    elif _list_frames(root):
        clips = [_frame_folder_clip(root)]
    else:
        clips = _clips_in(root, cache)
    return VideoDataset(root, split, clips, label_set)


def _clips_in(root: Path, cache: Path) -> list[Clip]:
    entries = sorted((p for p in root.iterdir() if not p.name.startswith(".")), key=natural_key)
    clips, names = [], {}
    for path in entries:
        if path.is_dir():
            clip = _frame_folder_clip(path)
        elif is_video_file(path):
            clip = decode_clip(path, cache)
        else:
            continue  # notes, timestamps, licences beside the clips
        if clip.name in names:
            raise VssegError(
                f"{root}: two clips named {clip.name!r} ({names[clip.name].name} and {path.name}); rename one"
            )
        names[clip.name] = path
        clips.append(clip)
    if not clips:
        raise VssegError(f"{root}: no clips found (expected video files {VIDEO_SUFFIXES} or folders of frames)")
    return clips


# --- frame folders -----------------------------------------------------------------------------------------


def _list_frames(folder: Path) -> list[Path]:
    return list_images(folder)


def _frame_folder_clip(folder: Path) -> Clip:
    frames = _list_frames(folder)
    if not frames:
        raise VssegError(f"{folder}: no frames (expected image files {IMAGE_SUFFIXES} of one clip, in order)")
    if len(frames) < 2:
        raise VssegError(f"{folder}: clip has 1 frame; a clip needs at least 2 consecutive frames")
    first = image_hw(frames[0])
    for path in frames[1:]:
        hw = image_hw(path)
        if hw != first:
            raise VssegError(
                f"{path}: frame is {hw[0]}x{hw[1]} (HxW) but {frames[0].name} is "
                f"{first[0]}x{first[1]}; the frames of one clip must have one size"
            )
    return Clip(folder.name, folder, tuple(frames), _read_timestamps(folder, frames))


def _read_timestamps(folder: Path, frames: list[Path]) -> tuple[float, ...] | None:
    path = folder / TIMESTAMPS_FILE
    if not path.is_file():
        return None
    from ..core.fileio import read_json

    data = read_json(path, "timestamps file")
    if isinstance(data, dict):
        missing = [p.name for p in frames if p.name not in data]
        if missing:
            raise VssegError(
                f"{path}: no timestamp for frame {missing[0]} ({len(missing)} of {len(frames)} "
                "missing); expected one number per frame file"
            )
        data = [data[p.name] for p in frames]
    if not isinstance(data, list) or len(data) != len(frames):
        n = len(data) if isinstance(data, list) else type(data).__name__
        raise VssegError(
            f"{path}: expected a list of {len(frames)} timestamps (one per frame, seconds) or an "
            f"object mapping frame file names to seconds, got {n}"
        )
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in data):
        raise VssegError(f"{path}: timestamps must be numbers (seconds)")
    for i in range(1, len(data)):
        if data[i] <= data[i - 1]:
            raise VssegError(
                f"{path}: timestamps do not increase at frame {frames[i].name} ({data[i - 1]} then {data[i]})"
            )
    return tuple(float(t) for t in data)


def image_hw(path: Path) -> tuple[int, int]:
    """(height, width) of an image from its PNG or JPEG header, decoding only other formats."""
    hw = _png_hw(path) or _jpeg_hw(path)
    if hw is None:
        from ..core.fileio import read_image

        hw = read_image(path).shape[:2]
    return hw


def _jpeg_hw(path: Path) -> tuple[int, int] | None:
    """Height and width from a JPEG's start-of-frame segment, or None if `path` is not a readable JPEG."""
    try:
        with open(path, "rb") as fh:
            if fh.read(2) != b"\xff\xd8":
                return None
            while True:
                marker = fh.read(2)
                if len(marker) < 2 or marker[0] != 0xFF:
                    return None
                while marker[1] == 0xFF:  # fill bytes
                    marker = marker[1:] + fh.read(1)
                code = marker[1]
                if code in (0xD8, 0x01) or 0xD0 <= code <= 0xD7:  # markers without a length
                    continue
                size = struct.unpack(">H", fh.read(2))[0]
                if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):  # SOFn
                    h, w = struct.unpack(">xHH", fh.read(5))
                    return (int(h), int(w)) if h and w else None
                fh.seek(size - 2, os.SEEK_CUR)
    except (OSError, struct.error):
        return None


# --- video files: decode once into the frame cache -----------------------------------------------------------


@dataclass(frozen=True)
class DecodeSettings:
    """What a cached clip depends on besides the file itself; part of the cache key."""

    image_format: str = "png"

    def key_parts(self) -> list[str]:
        import cv2

        return [f"decoder={DECODER_VERSION}", f"format={self.image_format}", f"opencv={cv2.__version__}"]


def clip_cache_path(video: Path, cache: Path, settings: DecodeSettings = DecodeSettings()) -> Path:
    """The cache folder of a video file: `<cache>/<stem>-<key>`, the key a sha1 of the file's resolved
    path, size, mtime and the decoder settings (a changed file or setting never reuses old frames)."""
    video = Path(video).resolve()
    st = video.stat()
    parts = [str(video), str(st.st_size), str(st.st_mtime_ns), *settings.key_parts()]
    key = hashlib.sha1("\0".join(parts).encode()).hexdigest()[:16]
    return Path(cache) / f"{video.stem}-{key}"


def decode_clip(video: Path, cache: Path | None = None, settings: DecodeSettings = DecodeSettings()) -> Clip:
    """The clip of a video file, decoded into the frame cache on first use (atomically, see the module)."""
    video = Path(video)
    if settings.image_format not in FRAME_FORMATS:
        raise VssegError(f"frame cache format {settings.image_format!r} unknown; expected one of {FRAME_FORMATS}")
    cache = Path(cache) if cache is not None else frames_cache_dir()
    target = clip_cache_path(video, cache, settings)
    if not (target / CLIP_FILE).is_file():
        _decode_into(video, target, settings)
    return _cached_clip(video, target)


def _cached_clip(video: Path, folder: Path) -> Clip:
    from ..core.fileio import read_json

    info = read_json(folder / CLIP_FILE, "decoded clip record")
    frames = tuple(folder / name for name in info["frames"])
    missing = next((p for p in frames if not p.is_file()), None)
    if missing is not None:
        raise VssegError(f"{missing}: frame missing from the decoded clip of {video}; delete {folder} to decode again")
    ts = info.get("timestamps")
    return Clip(video.stem, video, frames, tuple(ts) if ts else None, info.get("fps"))


def _decode_into(video: Path, target: Path, settings: DecodeSettings) -> None:
    """Decode every frame into a temporary folder beside `target`, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        info = _decode_frames(video, tmp, settings)
        from ..core.fileio import write_json

        write_json(tmp / CLIP_FILE, info)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / CLIP_FILE).is_file():  # not another process finishing the same clip first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_tmp(target: Path) -> None:
    """Temporary decode folders of this clip left by a killed process (older than an hour)."""
    for old in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            if time.time() - old.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


def _decode_frames(video: Path, out: Path, settings: DecodeSettings, max_bad_run: int = 10) -> dict:
    """Write every frame of `video` as `out/000000.png` …; the clip record (without the folder) is returned.

    OpenCV's `read` fails without moving on for an undecodable frame and at the end of the file alike: a
    failed read followed by a good one is a corrupt frame inside the clip (an error: the clip's frames
    would no longer be consecutive); failed reads that never end in a frame are the end of the clip.
    """
    import cv2

    from ..core.fileio import write_image

    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise VssegError(f"{video}: does not decode (OpenCV cannot open it: unknown format, codec or a damaged file)")
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0) or None
        header_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        names, stamps, bad_run, size = [], [], 0, None
        while True:
            ok, img = cap.read()
            if not ok or img is None:
                bad_run += 1
                if bad_run > max_bad_run or (header_frames and len(names) + bad_run > header_frames):
                    break
                continue
            if bad_run:
                raise VssegError(
                    f"{video}: frame {len(names)} does not decode (corrupt clip; the frames after it "
                    "would not be consecutive)"
                )
            if size is None:
                size = img.shape[:2]
            elif img.shape[:2] != size:
                raise VssegError(
                    f"{video}: frame {len(names)} is {img.shape[0]}x{img.shape[1]} (HxW), the first "
                    f"is {size[0]}x{size[1]}; the frames of one clip must have one size"
                )
            name = f"{len(names):06d}.{settings.image_format}"
            # encoded in memory and written checked: imwrite can report success over an empty file on a full disk
            write_image(out / name, img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            names.append(name)
            stamps.append(float(cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0)
    finally:
        cap.release()
    if not names:
        raise VssegError(f"{video}: does not decode (no frame could be read)")
    if header_frames and len(names) < header_frames - max(2, header_frames // 20):
        # more missing than a container's estimated count can explain (5 %): the file ends early
        raise VssegError(
            f"{video}: only {len(names)} of the {header_frames} frames its header announces decode "
            "(truncated or corrupt?)"
        )
    if len(names) < 2:
        raise VssegError(f"{video}: clip has 1 frame; a clip needs at least 2 consecutive frames")
    increasing = all(b > a for a, b in zip(stamps, stamps[1:]))
    st = video.resolve().stat()
    return {
        "source": str(video.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "settings": dataclasses.asdict(settings),
        "opencv": cv2.__version__,
        "fps": fps,
        "header_frames": header_frames,
        "frames": names,
        "timestamps": stamps if increasing else None,
        "height": size[0],
        "width": size[1],
    }


def describe(dataset: VideoDataset) -> list[dict]:
    """One JSON-ready line per clip (name, source, frames, fps, duration), for reports and `data` commands."""
    out = []
    for c in dataset.clips.values():
        duration = c.timestamps[-1] - c.timestamps[0] if c.timestamps else None
        out.append(
            {"name": c.name, "source": str(c.source), "frames": len(c.frames), "fps": c.fps, "duration_s": duration}
        )
    return out
