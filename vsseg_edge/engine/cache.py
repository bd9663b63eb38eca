"""Engine identity: the cache key and the compatibility check of an engine's manifest.

An engine is valid only for the ONNX it came from, the TensorRT version that built it, the GPU model
(name and compute capability) and the build settings. All of them go into the key; an engine whose
manifest disagrees with the installed TensorRT or the GPU is refused, never silently used.
"""

from __future__ import annotations

import hashlib
import json

from ..core.errors import VssegError


def engine_key(onnx_sha256: str, settings: dict, trt_version: str, gpu: dict, plan: dict) -> str:
    payload = {
        "onnx": onnx_sha256,
        "settings": settings,
        "trt": trt_version,
        "gpu": {"name": gpu["name"], "cc": list(gpu["compute_capability"])},
        "plan": plan,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def check_engine_manifest(man: dict, trt_version: str, gpu: dict, engine: str) -> None:
    """Refuse an engine built by another TensorRT version or for another GPU model."""
    built = man.get("tensorrt", {})
    if built.get("version") != trt_version:
        raise VssegError(
            f"{engine}: built with TensorRT {built.get('version')}, this machine has {trt_version}; "
            "rebuild it with `vsseg-edge build-engine` from its ONNX"
        )
    want_cc = list(built.get("gpu", {}).get("compute_capability", []))
    if want_cc != list(gpu["compute_capability"]) or built.get("gpu", {}).get("name") != gpu["name"]:
        raise VssegError(
            f"{engine}: built for {built.get('gpu', {}).get('name')} (sm_{''.join(map(str, want_cc))}), "
            f"this GPU is {gpu['name']} (sm_{''.join(map(str, gpu['compute_capability']))}); rebuild it"
        )


def _timing_tag(trt_version: str, gpu: dict) -> dict:
    return {"tensorrt": trt_version, "gpu": gpu["name"], "compute_capability": list(gpu["compute_capability"])}


def prepare_timing_cache(path: str | None, trt_version: str, gpu: dict, log=print) -> None:
    """Keep a --timing-cache file only if it was written by this TensorRT on this GPU model.

    TensorRT refuses a timing cache made with other CUDA device properties (setTimingCache returns false and
    logs an error) and Polygraphy would then merge the stale cache into the new one on save. The cache's tag
    (`<path>.json`, written by `tag_timing_cache`) decides; an untagged or foreign cache is removed, with a
    warning, and rebuilt by this build."""
    if not path:
        return
    from pathlib import Path

    cache, tag_file = Path(path), Path(f"{path}.json")
    if not cache.is_file():
        return
    try:
        tag = json.loads(tag_file.read_text())
    except (OSError, ValueError):
        tag = None
    if tag == _timing_tag(trt_version, gpu):
        return
    log(
        f"warning: --timing-cache {path} was not written by TensorRT {trt_version} on {gpu['name']} "
        f"(its tag: {tag}); starting a new one"
    )
    cache.unlink()
    tag_file.unlink(missing_ok=True)


def tag_timing_cache(path: str | None, trt_version: str, gpu: dict) -> None:
    """Record which TensorRT and GPU wrote the timing cache at `path` (when the build wrote one)."""
    if not path:
        return
    from pathlib import Path

    from ..core.fileio import atomic_write

    if Path(path).is_file():
        with atomic_write(Path(f"{path}.json"), "w") as fh:
            json.dump(_timing_tag(trt_version, gpu), fh)
