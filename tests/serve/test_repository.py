"""`export-triton`: config.pbtxt parsed with Triton's own model-config protobuf, the model copied byte for byte."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from vsseg_edge.cli import app
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.fileio import sha256_file
from vsseg_edge.core.manifest import read_manifest, write_manifest

pb = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed (pip install 'vsseg-edge[serve]')"
)


def parse(path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), pb.ModelConfig())


def test_dynamic_batch_uint8_model(tmp_path, serve_models):
    model = serve_models["uint8_labels"]
    r = CliRunner().invoke(
        app,
        [
            "export-triton",
            str(model),
            "--repo",
            str(tmp_path / "repo"),
            "--name",
            "seg",
            "--max-batch",
            "16",
            "--instances",
            "2",
        ],
    )
    assert r.exit_code == 0, r.output
    assert f"tritonserver --model-repository {(tmp_path / 'repo').resolve()}" in r.output
    entry = tmp_path / "repo" / "seg"
    cfg = parse(entry / "config.pbtxt")
    assert cfg.name == "seg" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 16
    assert cfg.HasField("dynamic_batching") and cfg.instance_group[0].count == 2
    (inp,), (out,) = cfg.input, cfg.output
    assert (inp.name, inp.data_type, list(inp.dims)) == ("input", pb.TYPE_UINT8, [64, 128, 3])
    assert (out.name, out.data_type, list(out.dims)) == ("labels", pb.TYPE_UINT8, [64, 128])
    man = read_manifest(model)
    pre = man["input"]["preprocess"]
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["vsseg.preprocess.layout"] == "nhwc" and params["vsseg.preprocess.dtype"] == "uint8"
    assert params["vsseg.preprocess.mean"] == ",".join(str(v) for v in pre["mean"])
    assert params["vsseg.preprocess.height"] == "64"
    assert params["vsseg.preprocess.channel_order"] == pre["channel_order"]
    assert json.loads(params["vsseg.classes"]) == man["classes"] and params["vsseg.output"] == "labels"
    assert params["vsseg.sha256"] == man["sha256"] == sha256_file(entry / "1" / "model.onnx")
    assert json.loads((entry / "vsseg-edge.json").read_text()) == man
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["seg"]  # no temporary folder left


def test_static_batch_model_has_full_dims_and_no_batching(tmp_path, serve_models):
    from vsseg_edge.serve.repository import export_triton

    res = export_triton(serve_models["logits_static"], tmp_path)
    cfg = parse(tmp_path / "tiny_static" / "config.pbtxt")
    assert res["max_batch_size"] == cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims) == [1, 3, 64, 128] and cfg.input[0].data_type == pb.TYPE_FP32
    assert list(cfg.output[0].dims) == [1, 19, 64, 128] and cfg.output[0].name == "logits"
    with pytest.raises(VssegError, match="static batch of 1; export it with --dynamic-batch"):
        export_triton(serve_models["logits_static"], tmp_path / "b", max_batch=4)


def _fake_engine(tmp_path, onnx, batch):
    """An engine file (bytes the test never runs) with the manifest build-engine writes, beside its ONNX."""
    folder = tmp_path / "engines"
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / onnx.name
    shutil.copy(onnx, src)
    shutil.copy(onnx.with_name(onnx.name + ".json"), src.with_name(src.name + ".json"))
    engine = folder / "tiny.fp16.engine"
    engine.write_bytes(b"a serialized engine (not read by export-triton)")
    write_manifest(
        engine,
        "engine",
        **_manifest_args(src),
        precision="fp16",
        parent=src,
        onnx_sha256=sha256_file(src),
        build={"settings": {"precision": "fp16", "batch": batch}, "plan": {}},
        tensorrt={"version": "10.3.0", "gpu": {"name": "Fake GPU", "compute_capability": [8, 7]}},
    )
    return engine, src


def test_engine_gets_tensorrt_plan_with_its_profile(tmp_path, serve_models):
    from vsseg_edge.serve.repository import export_triton

    engine, src = _fake_engine(tmp_path, serve_models["uint8_labels"], [1, 4, 8])
    res = export_triton(engine, tmp_path / "repo", name="seg_trt")
    cfg = parse(tmp_path / "repo" / "seg_trt" / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == res["max_batch_size"] == 8
    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert (tmp_path / "repo" / "seg_trt" / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert list(cfg.input[0].dims) == [64, 128, 3]
    with pytest.raises(VssegError, match="takes batches up to 8"):
        export_triton(engine, tmp_path / "repo2", max_batch=16)
    engine2, _ = _fake_engine(tmp_path / "x", serve_models["uint8_labels"], [2, 4, 8])
    with pytest.raises(VssegError, match="profile starts at 2"):
        export_triton(engine2, tmp_path / "repo3")
    src.unlink()
    with pytest.raises(VssegError, match="must be beside it"):
        export_triton(engine, tmp_path / "repo4")


def test_refusals_leave_nothing_behind(tmp_path, serve_models, monkeypatch):
    from vsseg_edge.serve import repository

    model = serve_models["uint8_labels"]
    repo = tmp_path / "repo"
    repository.export_triton(model, repo, name="m")
    before = (repo / "m" / "config.pbtxt").read_text()
    with pytest.raises(VssegError, match="exists; pass --overwrite"):
        repository.export_triton(model, repo, name="m")

    def broken_copy(src, dst):
        dst.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(repository.shutil, "copyfile", broken_copy)
    with pytest.raises(OSError, match="No space left"):
        repository.export_triton(model, repo, name="m", overwrite=True)
    monkeypatch.undo()
    assert (repo / "m" / "config.pbtxt").read_text() == before  # the previous entry is untouched
    assert sorted(p.name for p in repo.iterdir()) == ["m"]
    res = repository.export_triton(serve_models["logits_batch"], repo, name="m", overwrite=True)
    assert res["max_batch_size"] == 8 and parse(repo / "m" / "config.pbtxt").input[0].data_type == pb.TYPE_FP32
    assert sorted(p.name for p in repo.iterdir()) == ["m"]
    inside = repo / "m" / "1" / "model.onnx"
    write_manifest(inside, "onnx", **_manifest_args(model))
    with pytest.raises(VssegError, match="holds the model being exported"):
        repository.export_triton(inside, repo, name="m", overwrite=True)
    for bad, msg in ((model.with_suffix(".pt"), "export it"), (tmp_path / "none.onnx", "not found")):
        if msg == "export it":
            bad.write_bytes(b"x")
        with pytest.raises(VssegError, match=msg):
            repository.export_triton(bad, repo)


def _manifest_args(model):
    from vsseg_edge.core.manifest import manifest_preprocess

    man = read_manifest(model)
    return {
        "model": man["model"],
        "classes": man["classes"],
        "preprocess": manifest_preprocess(man, "x"),
        "output": man["output"],
    }
