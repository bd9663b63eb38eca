"""Where a figure was measured: CPU model, ISA flags and cores, GPUs, OS, Python, library versions, load.

Every report records this, because these machines are shared and figures from different CPUs (with or
without VNNI, for INT8) are not comparable. Nothing is imported to find a version (package metadata only),
and the GPU list comes from `nvidia-smi`, so no CUDA library is loaded.
"""

from __future__ import annotations

import os
import platform

# the x86 ISA extensions that decide which integer kernels onnxruntime (and torch) can use
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp")


def _cpuinfo_lines() -> list[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            return fh.read().splitlines()
    except OSError:
        return []


def _cpuinfo_value(lines: list[str], *keys: str) -> str | None:
    for key in keys:
        for line in lines:
            if ":" in line and line.split(":")[0].strip() == key:
                return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux; 'model name', or 'Hardware'/'Model' on ARM)."""
    found = _cpuinfo_value(_cpuinfo_lines(), "model name", "Hardware", "Model", "cpu model")
    return found or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """Which of `ISA_FLAGS` this CPU has (from the 'flags' or ARM 'Features' line of /proc/cpuinfo)."""
    found = set((_cpuinfo_value(_cpuinfo_lines(), "flags", "Features") or "").split())
    return [f for f in ISA_FLAGS if f in found]


def library_versions() -> dict:
    """Installed versions of the libraries that shape the figures, read from package metadata (no import)."""
    from importlib import metadata

    out = {}
    for name, dists in (
        ("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
        ("torch", ("torch",)),
        ("numpy", ("numpy",)),
        ("opencv", ("opencv-python-headless", "opencv-python", "opencv-contrib-python")),
        ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu13")),
    ):
        out[name] = None
        for dist in dists:
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def gpu_names() -> list[str]:
    """Names of the NVIDIA GPUs `nvidia-smi` sees (empty when there is none or no driver); no torch import."""
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        res = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in res.stdout.splitlines() if line.strip()] if res.returncode == 0 else []


def load_average() -> list[float] | None:
    """1/5/15-minute load averages (Unix), so a report shows whether other processes shared the CPU."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def environment() -> dict:
    """Where the figures were measured: CPU model, ISA flags and cores, GPUs, OS, Python, library versions."""
    from .. import __version__

    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "gpus": gpu_names(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "vsseg_edge": __version__,
        "libraries": library_versions(),
    }
