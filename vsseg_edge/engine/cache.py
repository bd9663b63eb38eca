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
    payload = {"onnx": onnx_sha256, "settings": settings, "trt": trt_version,
               "gpu": {"name": gpu["name"], "cc": list(gpu["compute_capability"])}, "plan": plan}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def check_engine_manifest(man: dict, trt_version: str, gpu: dict, engine: str) -> None:
    """Refuse an engine built by another TensorRT version or for another GPU model."""
    built = man.get("tensorrt", {})
    if built.get("version") != trt_version:
        raise VssegError(f"{engine}: built with TensorRT {built.get('version')}, this machine has {trt_version}; "
                         "rebuild it with `vsseg-edge build-engine` from its ONNX")
    want_cc = list(built.get("gpu", {}).get("compute_capability", []))
    if want_cc != list(gpu["compute_capability"]) or built.get("gpu", {}).get("name") != gpu["name"]:
        raise VssegError(f"{engine}: built for {built.get('gpu', {}).get('name')} (sm_{''.join(map(str, want_cc))}), "
                         f"this GPU is {gpu['name']} (sm_{''.join(map(str, gpu['compute_capability']))}); rebuild it")
