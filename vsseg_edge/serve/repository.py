"""`vsseg-edge export-triton MODEL --repo DIR`: a Triton model repository entry for users' own Triton servers.

    DIR/NAME/config.pbtxt         platform onnxruntime_onnx | tensorrt_plan, I/O names, dtypes, dims, batching,
                                  the artifact's preprocessing and classes as parameters (vsseg.*)
    DIR/NAME/1/model.onnx|.plan   the artifact, byte for byte (checked against its manifest's sha256)
    DIR/NAME/vsseg-edge.json      the artifact's manifest (Triton ignores files beside config.pbtxt)

Everything comes from the artifact and its manifest, nothing is guessed: the I/O of an ONNX from the graph itself;
of an engine from the ONNX it was built from (beside it, identified by the sha256 its manifest records), because
reading an engine needs TensorRT and a GPU. The batch: a graph whose first input dimension is symbolic
(`export --dynamic-batch`) gets `max_batch_size` (default 8; for an engine, at most its profile's max, which
`build-engine --batch` records) and `dynamic_batching {}` with dims without the batch; a static batch gets
`max_batch_size: 0` and the full dims. Unlike `vsseg-edge serve`, a model served this way runs on Triton's own
onnxruntime / TensorRT backend and takes the graph's input as it is: a client prepares frames as the `vsseg.*`
parameters say (an `export --uint8-input --argmax uint8` model takes resized uint8 frames and gives uint8 labels).
A zoo name (`export-triton espnet-camvid --repo DIR`) exports the zoo's ONNX as `calibrate` does (`zoo.onnx_for`:
once, into the user cache; needs torch) and names the entry after the zoo model.

The config is built as Triton's ModelConfig protobuf (tritonclient's model_config_pb2), written in text format and
parsed back with the same schema, so a field Triton does not know cannot be written. The entry is assembled in a
temporary folder inside DIR and renamed into place: an interrupted export leaves no partial model, and an existing
entry is replaced (with `overwrite`) only once the new one is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..core.errors import VssegError
from ..core.fileio import sha256_file, write_json
from ..core.manifest import read_manifest
from .server import served_name

PLATFORMS = {
    ".onnx": ("onnxruntime_onnx", "model.onnx"),
    ".engine": ("tensorrt_plan", "model.plan"),
    ".plan": ("tensorrt_plan", "model.plan"),
}
_TYPES = {
    "FLOAT": "TYPE_FP32",
    "FLOAT16": "TYPE_FP16",
    "UINT8": "TYPE_UINT8",
    "INT8": "TYPE_INT8",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "BOOL": "TYPE_BOOL",
}
DEFAULT_MAX_BATCH = 8


def _graph_io(onnx_path: Path) -> dict:
    import onnx

    from ..export.simplify import boundary

    try:
        return boundary(onnx.load(str(onnx_path), load_external_data=False))
    except Exception as exc:  # protobuf raises several types on corrupt files
        raise VssegError(f"{onnx_path}: not a readable ONNX file ({type(exc).__name__})") from None


def _engine_parent_onnx(engine: Path, man: dict) -> Path:
    """The ONNX an engine was built from: beside it, named by its manifest, with the recorded sha256."""
    want = man.get("onnx_sha256") or (man.get("parent") or {}).get("sha256")
    name = (man.get("parent") or {}).get("file")
    candidate = engine.with_name(name) if name else None
    if candidate is None or not candidate.is_file() or sha256_file(candidate) != want:
        raise VssegError(
            f"{engine}: its I/O is read from the ONNX it was built from ({name or 'unnamed'}, sha256 "
            f"{str(want)[:12]}…), which must be beside it; copy that ONNX next to the engine"
        )
    return candidate


def _batch_and_dims(io: dict, max_batch: int | None, profile, where: str) -> tuple[int, dict]:
    """max_batch_size and per-tensor dims (without the batch when it is dynamic)."""
    first = io["inputs"][0]["shape"]
    dynamic = not isinstance(first[0], int) or first[0] <= 0
    if not dynamic:
        if max_batch is not None:
            raise VssegError(
                f"--max-batch: {where} has a static batch of {first[0]}; export it with "
                "--dynamic-batch (and build the engine with --batch) to batch on Triton"
            )
        return 0, {
            t["name"]: [d if isinstance(d, int) and d > 0 else -1 for d in t["shape"]]
            for t in io["inputs"] + io["outputs"]
        }
    if profile is not None:
        lo, _, hi = profile
        if lo > 1:
            raise VssegError(
                f"{where}: its batch profile starts at {lo}; Triton sends batches from 1 — rebuild "
                "with --batch 1,OPT,MAX"
            )
        if max_batch is not None and max_batch > hi:
            raise VssegError(f"--max-batch {max_batch}: {where} takes batches up to {hi} (its build profile)")
        max_batch = max_batch or hi
    max_batch = max_batch or DEFAULT_MAX_BATCH
    if max_batch < 1:
        raise VssegError(f"--max-batch {max_batch}: expected a positive number")
    return max_batch, {
        t["name"]: [d if isinstance(d, int) and d > 0 else -1 for d in t["shape"][1:]]
        for t in io["inputs"] + io["outputs"]
    }


def build_config(
    name: str,
    platform: str,
    io: dict,
    max_batch: int,
    dims: dict,
    man: dict,
    *,
    instances: int = 1,
    kind: str | None = None,
):
    """Triton's ModelConfig message for the artifact (see the module docstring)."""
    from ._triton import model_config_pb2

    pb = model_config_pb2()
    cfg = pb.ModelConfig(name=name, platform=platform, max_batch_size=max_batch)
    for tensors, field in ((io["inputs"], cfg.input), (io["outputs"], cfg.output)):
        for t in tensors:
            if t["dtype"] not in _TYPES:
                raise VssegError(
                    f"{man.get('file')}: tensor {t['name']!r} has type {t['dtype']}, which this "
                    f"export does not map to a Triton type ({', '.join(_TYPES)})"
                )
            field.add(name=t["name"], data_type=pb.DataType.Value(_TYPES[t["dtype"]]), dims=dims[t["name"]])
    if max_batch > 0:
        cfg.dynamic_batching.SetInParent()
    group = cfg.instance_group.add(count=instances)
    if kind is not None:
        group.kind = pb.ModelInstanceGroup.Kind.Value(kind)
    for key, value in _parameters(man).items():
        cfg.parameters[key].string_value = value
    return cfg


def _parameters(man: dict) -> dict[str, str]:
    """The artifact's preprocessing, classes, output kind and identity, as string parameters `vsseg.*`."""
    pre = man["input"]["preprocess"]
    params = {
        f"vsseg.preprocess.{k}": ",".join(str(x) for x in v) if isinstance(v, list) else str(v) for k, v in pre.items()
    }
    output = man.get("output", "logits")
    params.update(
        {
            "vsseg.input_format": "BGR frames prepared by vsseg_edge.core.preprocess with vsseg.preprocess.*",
            "vsseg.output": output.get("kind", "logits") if isinstance(output, dict) else str(output),
            "vsseg.classes": json.dumps(list(man.get("classes", []))),
            "vsseg.model": str(man.get("model", "")),
            "vsseg.precision": str(man.get("precision", "")),
            "vsseg.sha256": str(man.get("sha256", "")),
            "vsseg.kind": str(man.get("kind", "")),
        }
    )
    return params


def to_text(cfg) -> str:
    """Text format, parsed back with Triton's schema and compared: what is written is what Triton reads."""
    from google.protobuf import text_format

    from ._triton import model_config_pb2

    text = text_format.MessageToString(cfg)
    parsed = model_config_pb2().ModelConfig()
    text_format.Parse(text, parsed)
    if parsed != cfg:
        raise VssegError(f"config.pbtxt of {cfg.name!r}: does not parse back to the same ModelConfig")
    return text


def export_triton(
    model: str | Path,
    repo: str | Path,
    *,
    name: str | None = None,
    max_batch: int | None = None,
    instances: int = 1,
    overwrite: bool = False,
    log=None,
) -> dict:
    """Write REPO/NAME (config.pbtxt, 1/model.*, vsseg-edge.json); return what was written.

    `model`: an ONNX or engine path, or a zoo name: the zoo's ONNX export (`zoo.onnx_for`, made once into the
    user cache, torch needed), named after the zoo entry unless `name` says otherwise."""
    from ..zoo import is_zoo_name, onnx_for

    if is_zoo_name(model):
        name = name or str(model)  # the zoo name, not the cached file's (which carries a hash and a version)
        model = onnx_for(model, log=log)
    model, repo = Path(model), Path(repo)
    suffix = model.suffix.lower()
    if suffix not in PLATFORMS:
        hint = " (export it: vsseg-edge export MODEL.pt --out m.onnx)" if suffix in (".pt", ".pth") else ""
        raise VssegError(f"{model}: Triton serves ONNX (.onnx) or TensorRT engines (.engine/.plan){hint}")
    if not model.is_file():
        raise VssegError(f"{model}: model file not found")
    if instances < 1:
        raise VssegError(f"--instances {instances}: expected a positive number")
    name = served_name(model, name)
    man = read_manifest(model, kind=("onnx", "qdq_onnx") if suffix == ".onnx" else "engine", verify=True)
    platform, filename = PLATFORMS[suffix]
    io_source = model if suffix == ".onnx" else _engine_parent_onnx(model, man)
    io = _graph_io(io_source)
    if len(io["inputs"]) != 1:
        raise VssegError(f"{io_source}: expected one input, the graph has {len(io['inputs'])}")
    profile = ((man.get("build") or {}).get("settings") or {}).get("batch") if suffix != ".onnx" else None
    batch, dims = _batch_and_dims(io, max_batch, profile, model.name)
    cfg = build_config(
        name,
        platform,
        io,
        batch,
        dims,
        man,
        instances=instances,
        kind="KIND_GPU" if platform == "tensorrt_plan" else None,
    )
    text = to_text(cfg)
    target = repo / name
    _check_target(model, target, overwrite)
    _write_entry(model, man, target, filename, text)
    return {
        "path": str(target),
        "name": name,
        "platform": platform,
        "max_batch_size": batch,
        "inputs": [(t["name"], t["dtype"], dims[t["name"]]) for t in io["inputs"]],
        "outputs": [(t["name"], t["dtype"], dims[t["name"]]) for t in io["outputs"]],
        "config": text,
    }


def _check_target(model: Path, target: Path, overwrite: bool) -> None:
    src, dst = model.resolve(), target.resolve()
    if src == dst or dst in src.parents:
        raise VssegError(
            f"--repo: {target} holds the model being exported ({model}); choose another repository or --name"
        )
    if target.exists() and not overwrite:
        raise VssegError(f"--repo: {target} exists; pass --overwrite to replace it")
    if target.exists() and not target.is_dir():
        raise VssegError(f"--repo: {target} exists and is not a folder")


def _write_entry(model: Path, man: dict, target: Path, filename: str, config_text: str) -> None:
    """Assemble the entry in a temporary folder beside `target`, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = None
    try:
        (tmp / "1").mkdir()
        shutil.copyfile(model, tmp / "1" / filename)
        if sha256_file(tmp / "1" / filename) != man["sha256"]:
            raise VssegError(f"{model}: the copy does not match the manifest's sha256 (file changed while copying?)")
        (tmp / "config.pbtxt").write_text(config_text)
        write_json(tmp / "vsseg-edge.json", man)
        os.chmod(tmp, 0o777 & ~_umask())
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        if old is not None and not target.exists():
            os.replace(old, target)  # put the previous entry back
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
