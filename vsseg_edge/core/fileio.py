"""Checked file writes and image reads with one-line errors; the one place that knows how a write can fail.

Every writer in vsseg-edge goes through `atomic_write` (or `atomic_path`): the data goes to a temporary
file in the target folder which is renamed over the target only when complete, so an interrupted run
never leaves a truncated artifact behind. A write that fails because of the disk (full, read-only, quota,
I/O error) becomes one `VssegError` line naming the target, and the temporary file goes.

OpenCV does not raise when a write fails: `imwrite` may report success over an empty file and a
`VideoWriter` reports nothing. Images are therefore encoded in memory and written by Python
(`write_image`), and videos go through `CheckedVideoWriter`, which reads the finished file back before
it is renamed into place. `check_output` refuses, before any work, an output path that cannot be written
(a folder where a file is expected, a file where a folder is, a read-only or full disk), and
`refuse_output_over_inputs` an output that would replace one of the command's inputs.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .errors import VssegError

# errno values that mean "the disk refused the data" (any write), and those that also mean "this path cannot
# be created" (making the folder and the temporary file, before any data)
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO})
CREATE_ERRNOS = DISK_ERRNOS | {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG}


def write_failure(target: str | os.PathLike, exc: OSError, flag: str | None = None) -> VssegError:
    """The one-line error of a write of `target` that the disk refused (`flag`: the option that named it)."""
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else type(exc).__name__)
    where = f"{flag} {target}" if flag else f"{target}"
    return VssegError(f"{where}: cannot write ({reason})")


@contextlib.contextmanager
def write_errors(target: str | os.PathLike, flag: str | None = None, errnos=DISK_ERRNOS) -> Iterator[None]:
    """Turn a disk's refusal (full, read-only, quota, I/O) inside the block into one line naming `target`."""
    try:
        yield
    except OSError as exc:
        if exc.errno in errnos:
            raise write_failure(target, exc, flag) from None
        raise


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, flag: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` if the block succeeds.

    The temporary name keeps the target's suffix so that writers which dispatch on the extension
    (cv2.imwrite, torch.onnx.export) behave as they would on the target. The temporary file is removed
    whatever happens (an error, Ctrl-C, SIGTERM through `core.signals`); a disk's refusal becomes one line.
    """
    target = Path(target)
    tmp_path = None
    try:  # from the file's creation on: a signal right after mkstemp must not leave it behind
        with write_errors(target, flag, CREATE_ERRNOS):
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}")
            tmp_path = Path(tmp)
            os.close(fd)
        with write_errors(target, flag):
            yield tmp_path
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the usual mode
            os.replace(tmp_path, target)
    finally:
        if tmp_path is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike, mode: str = "wb", flag: str | None = None):
    """Open a temporary file for writing; it replaces `target` only if the block completes.

    The file is flushed and closed before the rename, so a write the disk refuses at flush time (a full
    disk often reports only then) fails here instead of leaving a short file.
    """
    with atomic_path(target, flag) as tmp, open(tmp, mode) as fh:
        yield fh
        fh.flush()


def write_json(target: str | os.PathLike, obj, flag: str | None = None) -> None:
    with atomic_write(target, "w", flag) as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def read_json(path: str | os.PathLike, what: str = "JSON file"):
    """Parse a JSON file, or raise one line naming the file: missing (as `what`) or not valid JSON."""
    path = Path(path)
    if not path.is_file():
        raise VssegError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise VssegError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _imread(path: str | os.PathLike, flags_name: str, what: str) -> tuple[Path, np.ndarray]:
    """cv2.imread with one-line errors for a missing or unreadable file (`what` names the kind of image)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise VssegError(f"{path}: {what} not found")
    img = cv2.imread(str(path), getattr(cv2, flags_name))
    if img is None:
        raise VssegError(f"{path}: not a readable {what} (corrupt or unsupported format)")
    return path, img


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a colour image as BGR uint8 HxWx3 (OpenCV's order), or raise a one-line error."""
    return _imread(path, "IMREAD_COLOR", "image")[1]


def read_label(path: str | os.PathLike, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read a single-channel label PNG as uint8 HxW, checking its size when `expected_hw` is given."""
    path, lab = _imread(path, "IMREAD_UNCHANGED", "label image")
    if lab.ndim == 3:
        raise VssegError(f"{path}: expected a single-channel label PNG, got {lab.shape[2]} channels")
    if lab.dtype != np.uint8:
        if lab.max() > 255:
            raise VssegError(f"{path}: label values up to {lab.max()} do not fit uint8 class ids")
        lab = lab.astype(np.uint8)
    if expected_hw is not None and lab.shape != tuple(expected_hw):
        raise VssegError(
            f"{path}: label is {lab.shape[0]}x{lab.shape[1]} (HxW), expected {expected_hw[0]}x{expected_hw[1]}"
        )
    return lab


def write_image(
    path: str | os.PathLike, array: np.ndarray, params: list[int] | None = None, flag: str | None = None
) -> None:
    """Encode `array` in memory in the format of the suffix (PNG, JPEG …), then write it atomically and checked.

    `cv2.imwrite` can report success over an empty file on a full disk; `cv2.imencode` plus a Python write
    reports every failure.
    """
    import cv2

    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".png", array, params or [])
    if not ok:
        raise VssegError(f"{path}: OpenCV cannot encode a {array.dtype} {tuple(array.shape)} image as {path.suffix}")
    with atomic_write(path, "wb", flag) as fh:
        fh.write(buf.tobytes())


def write_png(path: str | os.PathLike, array: np.ndarray, flag: str | None = None) -> None:
    """`write_image` for a `.png` path (label maps, frames, 16-bit flow)."""
    write_image(path, array, flag=flag)


class ErrorKeepingWriter:
    """A binary file wrapper that remembers the OSError of a failed `write`.

    Some writers (`torch.save` to a file object) turn the OSError of a full disk into their own
    RuntimeError; `raise_kept()` re-raises the original so `write_errors` can name the disk's reason.
    """

    def __init__(self, fh):
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self._fh.flush()

    def raise_kept(self) -> None:
        if self.error is not None:
            raise self.error


# --- videos ----------------------------------------------------------------------------------------------


class CheckedVideoWriter:
    """`cv2.VideoWriter` into a temporary file beside `path`, read back at `close` before it is renamed onto `path`.

    OpenCV's writer reports neither a full disk nor a failed frame: after every frame the disk must still
    have space (a write it refused filled it to the last byte; a free-space query costs microseconds, a frame
    milliseconds), so a disk that fills mid-run ends the run at that frame with one line naming `path` and the
    temporary file removed; at close the file is read back (it must open and hold the frames written), and a
    broken one is removed with one line too. `abort()` drops the file.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        size_wh: tuple[int, int],
        fourcc: str = "mp4v",
        flag: str | None = None,
    ):
        import cv2

        self.path, self.flag = Path(path), flag
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path, flag))
        self.size_wh = (int(size_wh[0]), int(size_wh[1]))
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*fourcc), float(fps), self.size_wh)
        if not self._writer.isOpened():
            self.abort()
            raise VssegError(f"{self._where}: OpenCV cannot write this video (codec {fourcc} unavailable)")
        self.frames = 0

    @property
    def _where(self) -> str:
        return f"{self.flag} {self.path}" if self.flag else str(self.path)

    def write(self, image: np.ndarray) -> None:
        self._writer.write(image)
        self.frames += 1
        if free_bytes(self._tmp.parent) == 0:
            self.abort()
            raise VssegError(f"{self._where}: cannot write ({os.strerror(errno.ENOSPC)})")

    def close(self) -> None:
        """Finish the file, check it holds every frame, and rename it onto `path`; or remove it and say why."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        try:
            problem = _video_problem(self._tmp, self.frames)
            if problem:
                raise VssegError(
                    f"{self._where}: cannot write ({problem}; {free_bytes(self._tmp.parent)} bytes free on its disk)"
                )
        except BaseException as exc:
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._stack.close()

    def abort(self) -> None:
        """Drop the temporary file; nothing is renamed onto `path`."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        abort_atomic(self._stack)


def abort_atomic(stack: contextlib.ExitStack) -> None:
    """Leave the `atomic_path` entered on `stack` as after an error: its temporary file goes, nothing is renamed."""
    with contextlib.suppress(VssegError):
        stack.__exit__(VssegError, VssegError("aborted"), None)


def _video_problem(path: Path, frames: int) -> str | None:
    """Why the video at `path` is not a playable file of `frames` frames, or None when it is."""
    import cv2

    if frames == 0:
        return None
    if not path.is_file() or path.stat().st_size == 0:
        return "the file is empty"
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return "the finished file does not open as a video"
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if count > 0 and count != frames:  # a container that does not say (count <= 0) is checked below only
            return f"the finished file holds {count} of the {frames} frames written"
        ok, _ = cap.read()
        if not ok:
            return "the finished file's first frame does not decode"
    finally:
        cap.release()
    return None


# --- output paths ----------------------------------------------------------------------------------------


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes free for this user on the disk that holds `path` (or its nearest existing folder)."""
    return shutil.disk_usage(_existing_ancestor(Path(path))).free


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _human(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def check_output(
    path: str | os.PathLike,
    flag: str,
    *,
    folder: bool = False,
    suffixes: Iterable[str] = (),
    need_bytes: int = 0,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Path:
    """Refuse, before any work, an output that cannot be written; return it as a Path.

    Checks, each a one-line error naming `flag` and the path: the suffix (`suffixes`, when given: what
    the next command accepts); a folder where a file is expected or the reverse; a file on the way to it;
    the folder it goes in (or the nearest existing one) must take a new file (read-only disks, permissions);
    at least `need_bytes` free; and it must not be one of `inputs` (`refuse_output_over_inputs`).
    """
    path = Path(path)
    suffixes = tuple(suffixes)
    if folder and path.exists() and not path.is_dir():
        raise VssegError(f"{flag} {path}: is a file; expected a folder")
    if not folder and path.is_dir():
        raise VssegError(f"{flag} {path}: is a folder; expected a file name")
    if suffixes and not path.name.lower().endswith(suffixes):
        raise VssegError(f"{flag} {path}: expected a {' or '.join(suffixes)} file name")
    refuse_output_over_inputs([(flag, path)], inputs)
    base = _existing_ancestor(path if folder else path.parent)
    if not base.is_dir():
        raise VssegError(f"{flag} {path}: {base} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".vsseg-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise VssegError(f"{flag} {path}: cannot write in {base} ({exc.strerror or exc})") from None
    if need_bytes:
        free = free_bytes(base)
        if free < need_bytes:
            raise VssegError(f"{flag} {path}: only {_human(free)} free on its disk, about {_human(need_bytes)} needed")
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when `a` and `b` name the same file or folder (same resolved path, or the same inode)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_output_over_inputs(
    outputs: Iterable[tuple[str, str | os.PathLike | None]], inputs: Iterable[str | os.PathLike | None]
) -> None:
    """Refuse an output (flag, path) that is one of `inputs` or the manifest (`<input>.json`) beside one.

    Writing a command's output over its input destroys the input (the checkpoint replaced by the ONNX,
    the source video by the overlay): it is never what the user meant.
    """
    inputs = [Path(p) for p in inputs if p is not None]
    candidates = [(p, "an input of this command") for p in inputs]
    candidates += [(p.with_name(p.name + ".json"), f"the manifest of the input {p.name}") for p in inputs if p.name]
    for flag, out in outputs:
        if out is None:
            continue
        for inp, what in candidates:
            if same_file(out, inp):
                raise VssegError(f"{flag} {out}: is {what}; writing there would destroy it (give another path)")
