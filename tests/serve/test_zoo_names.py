"""Zoo names for `serve` and `export-triton`, as every other command that takes a model accepts them.

`serve`: the name resolves to the packaged checkpoint and the backend opens on it (Triton itself is not started
here; tests/serve/test_triton_server.py starts a real server). `export-triton`: a real repository entry made
from the zoo's cached ONNX export, its config parsed with tritonclient's protobuf.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vsseg_edge import zoo
from vsseg_edge.cli import app
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.fileio import sha256_file
from vsseg_edge.core.manifest import read_manifest


def test_serve_a_zoo_name_opens_its_checkpoint_on_the_torch_backend(monkeypatch):
    """`vsseg-edge serve espnet-camvid`: the command's server holds the packaged checkpoint under the zoo name,
    and its backends open on it (what Triton's instances would run)."""
    pytest.importorskip("torch")
    from vsseg_edge.serve import server as server_mod

    seen = {}

    def fake_serve_forever(server, started=None):
        seen["model"], seen["name"], seen["ports"] = server.model, server.name, server.config.ports
        try:
            (be,) = server._open_backends()
            seen["backend"], seen["classes"] = be.name, list(be.classes)
            seen["artifact"], seen["describe"] = str(be.artifact), server.describe()
        finally:
            server.stop()

    monkeypatch.setattr(server_mod, "serve_forever", fake_serve_forever)
    r = CliRunner().invoke(app, ["serve", "espnet-camvid", "--port", "18000", "--threads", "1"])
    assert r.exit_code == 0, (r.output, r.exception)
    entry = zoo.get("espnet-camvid")
    assert seen["model"] == entry.path and seen["name"] == "espnet-camvid" and seen["ports"] == (18000, 18001, 18002)
    assert seen["backend"] == "torch" and len(seen["classes"]) == entry.num_classes == 11
    assert seen["artifact"] == str(entry.path)
    assert (
        seen["describe"].startswith("serving 'espnet-camvid'") and "/v2/models/espnet-camvid/infer" in seen["describe"]
    )


def test_serve_zoo_name_with_its_own_name_and_unknown_names():
    from vsseg_edge.serve.server import SegmentationServer, ServeConfig

    server = SegmentationServer("espnet-cityscapes", ServeConfig(name="city"))
    assert server.model == zoo.get("espnet-cityscapes").path and server.name == "city"
    with pytest.raises(VssegError, match=r"espnet-kitti: no such file, and not a zoo model \(espnet-"):
        SegmentationServer("espnet-kitti")
    r = CliRunner().invoke(app, ["serve", "espnet-kitti"])
    assert isinstance(r.exception, VssegError) and "not a zoo model" in str(r.exception)


def test_serve_check_refuses_an_unknown_reference_before_connecting(tmp_path):
    """--reference takes a zoo name too; a wrong one is refused at once, not after waiting for the server."""
    r = CliRunner().invoke(
        app, ["serve", "--check", "grpc://127.0.0.1:1", "--source", str(tmp_path), "--reference", "espnet-kitti"]
    )
    assert isinstance(r.exception, VssegError) and "espnet-kitti: no such file, and not a zoo model" in str(r.exception)


@pytest.mark.slow  # exports the zoo model to ONNX once (~20 s on 2 cores, with its parity check)
def test_export_triton_a_zoo_name_writes_its_onnx_export(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pb = pytest.importorskip(
        "tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed (pip install 'vsseg-edge[serve]')"
    )
    from google.protobuf import text_format

    monkeypatch.setenv("VSSEG_EDGE_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    r = CliRunner().invoke(app, ["export-triton", "espnet-camvid", "--repo", str(repo)])
    assert r.exit_code == 0, (r.output, r.exception)
    assert "exporting the zoo checkpoint" in r.output
    entry = repo / "espnet-camvid"
    cfg = text_format.Parse((entry / "config.pbtxt").read_text(), pb.ModelConfig())
    assert cfg.name == "espnet-camvid" and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")  # the zoo export has a static batch
    (inp,), (out,) = cfg.input, cfg.output
    assert (inp.name, inp.data_type, list(inp.dims)) == ("input", pb.TYPE_FP32, [1, 3, 360, 480])
    assert (out.name, out.data_type, list(out.dims)) == ("logits", pb.TYPE_FP32, [1, 11, 360, 480])

    cached = zoo.onnx_for("espnet-camvid")  # the export the command made, in the cache, not made again
    assert cached.parent == tmp_path / "cache" / "zoo"
    man = json.loads((entry / "vsseg-edge.json").read_text())
    assert man == read_manifest(cached) and sha256_file(entry / "1" / "model.onnx") == sha256_file(cached)
    assert man["parent"]["sha256"] == read_manifest(zoo.get("espnet-camvid").path)["sha256"]
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["vsseg.sha256"] == man["sha256"] and params["vsseg.output"] == "logits"
    assert json.loads(params["vsseg.classes"]) == man["classes"] and len(man["classes"]) == 11

    r = CliRunner().invoke(app, ["export-triton", "espnet-camvid", "--repo", str(repo), "--name", "camvid"])
    assert r.exit_code == 0 and "exporting" not in r.output  # the cached export is reused
    assert sorted(p.name for p in repo.iterdir()) == ["camvid", "espnet-camvid"]
