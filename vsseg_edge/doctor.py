"""`vsseg-edge doctor`: which optional parts are installed, each with the hint for what is missing."""

from __future__ import annotations

import importlib
import importlib.metadata as md

import typer


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _import_ok(module: str) -> tuple[bool, str]:
    try:
        importlib.import_module(module)
        return True, ""
    except Exception as exc:  # a broken install is worth reporting, not crashing on
        return False, f"{type(exc).__name__}: {exc}".splitlines()[0][:120]


def _cuda_devices() -> str:
    from .core.errors import VssegError
    from .engine.device import cudart, gpu_info

    try:
        rt = cudart()
        err, count = rt.cudaGetDeviceCount()
        if int(err) != 0:
            return f"no CUDA device ({getattr(err, 'name', err)})"
        return "; ".join(
            f"{g.index}: {g.name} (sm_{g.compute_capability[0]}{g.compute_capability[1]})"
            for g in (gpu_info(i) for i in range(count))
        )
    except VssegError as exc:
        return str(exc)


def _opencv_video() -> str:
    import cv2

    info = cv2.getBuildInformation()
    flags = {}
    for key in ("GStreamer", "V4L/V4L2", "FFMPEG"):
        line = next((ln for ln in info.splitlines() if ln.strip().startswith(key + ":")), "")
        flags[key] = line.split(":", 1)[1].strip().split()[0] if line else "?"
    return f"{cv2.__version__} (" + ", ".join(f"{k} {v}" for k, v in flags.items()) + ")"


def collect() -> list[tuple[str, str, str]]:
    """Rows of (part, status, hint-if-missing)."""
    rows = []
    for part, module, dist, hint in (
        ("torch", "torch", "torch", "pip install 'vsseg-edge[train]' (CPU-only: pip install torch==2.13.0 first)"),
        ("onnx", "onnx", "onnx", "pip install 'vsseg-edge[export]'"),
        ("onnxsim", "onnxsim", "onnxsim", "pip install 'vsseg-edge[export]'"),
        ("onnxruntime", "onnxruntime", None, "pip install 'vsseg-edge[edge]' (or onnxruntime-gpu)"),
        ("pyav", "av", "av", "pip install 'vsseg-edge[edge]' (H.264 files, RTP/RTSP output)"),
        ("tensorrt", "tensorrt", None, "JetPack ships it; on desktops pip install 'vsseg-edge[trt]'"),
        ("polygraphy", "polygraphy", "polygraphy", "pip install 'vsseg-edge[trt]'"),
        ("modelopt", "modelopt", "nvidia-modelopt", "pip install 'vsseg-edge[calib-trt]' (ONNX PTQ for TensorRT INT8)"),
        ("pytriton", "pytriton", "nvidia-pytriton", "pip install 'vsseg-edge[serve]' (vsseg-edge serve)"),
        (
            "tritonclient",
            "tritonclient.grpc",
            "tritonclient",
            "pip install 'vsseg-edge[serve]' (serve --check, export-triton)",
        ),
    ):
        ok, err = _import_ok(module)
        if ok:
            mod = importlib.import_module(module)
            version = getattr(mod, "__version__", None) or (_version(dist) if dist else None) or "?"
            status = f"ok {version}"
            if module == "onnxruntime":
                status += " providers: " + ", ".join(mod.get_available_providers())
            if module == "torch":
                status += f" cuda: {mod.cuda.is_available()}"
            rows.append((part, status, ""))
        else:
            rows.append((part, "missing" if "No module named" in err else f"broken ({err})", hint))
    if any(r[0] == "pytriton" and r[1].startswith("ok") for r in rows):
        from .serve._triton import stub_python_problem

        problem = stub_python_problem()
        rows.append(
            ("Triton stub", "ok (loads this Python's libpython)" if problem is None else "broken", problem or "")
        )
    rows.append(("CUDA devices", _cuda_devices(), ""))
    try:
        rows.append(("opencv", _opencv_video(), ""))
        rows.append(_opencv_builds())
    except ImportError:
        from .core.errors import OPENCV_HINT

        rows.append(("opencv", "missing", OPENCV_HINT))
    return rows


def _opencv_builds() -> tuple[str, str, str]:
    """Which pip OpenCV build(s) provide cv2, and whether `--show` can open a window."""
    import cv2

    dists = [
        d
        for d in ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")
        if _version(d)
    ]
    gui = next(
        (ln.split(":", 1)[1].strip() for ln in cv2.getBuildInformation().splitlines() if ln.strip().startswith("GUI:")),
        "NONE",
    )
    windows = "no" if gui.upper() in ("NONE", "") else gui
    status = f"windows: {windows}; pip builds: {', '.join(dists) or 'none (system)'}"
    if len(dists) > 1:
        return (
            "opencv build",
            status,
            f"{' and '.join(dists)} overwrite each other's cv2: keep one "
            "(pip uninstall the others, then reinstall the one you keep)",
        )
    if gui.upper() in ("NONE", ""):
        return (
            "opencv build",
            status,
            "for --show: pip uninstall -y opencv-python-headless && pip install 'vsseg-edge[gui]'",
        )
    return ("opencv build", status, "")


def register(app, data_app) -> None:
    @app.command()
    def doctor():
        """Report which optional parts (torch, onnx, onnxruntime, TensorRT, CUDA, OpenCV video) are present."""
        for part, status, hint in collect():
            line = f"{part:<13} {status}"
            if hint:
                line += f"  -> {hint}"
            typer.echo(line)
