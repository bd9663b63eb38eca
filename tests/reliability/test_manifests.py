"""What a manifest claims is checked when its artifact is opened: the sha256 (cached), and every field's type.

A manifest that does not describe its file (copied from another artifact, or edited) is refused by every
command that opens the artifact, so a derived artifact can never record a fake parent hash.
"""

from __future__ import annotations

import json
import os

import pytest
from _corpus import QUICK_BENCH, copy_artifact, refused, vs


def swap_manifest(model, donor):
    """Give `model` the manifest of `donor` (an FP32 ONNX dressed as the INT8 model)."""
    model.with_name(model.name + ".json").write_text(donor.with_name(donor.name + ".json").read_text())


def edit_manifest(path, **changes):
    man_path = path.with_name(path.name + ".json")
    man = json.loads(man_path.read_text())
    for key, value in changes.items():
        node = man
        parts = key.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    man_path.write_text(json.dumps(man))


def test_run_refuses_an_onnx_carrying_another_artifacts_manifest(arts, tmp_path):
    fake = copy_artifact(arts["onnx"], tmp_path, "fake.int8.qdq.onnx")
    swap_manifest(fake, arts["int8"])
    refused(vs("run", fake, "--source", arts["frames"]), str(fake), "sha256", "manifest")


@pytest.mark.parametrize("command", ["run", "bench", "calibrate", "export"])
def test_a_wrong_sha256_is_refused_by_every_command(arts, tmp_path, command):
    src = arts["ckpt"] if command == "export" else arts["onnx"]
    art = copy_artifact(src, tmp_path)
    edit_manifest(art, sha256="0" * 64)
    args = {
        "run": ["run", art, "--source", arts["frames"]],
        "bench": [
            "bench",
            art,
            "--dataset",
            arts["synth"],
            "--out",
            tmp_path / "r",
            *QUICK_BENCH,
        ],
        "calibrate": [
            "calibrate",
            art,
            "--frames",
            arts["synth"],
            "--out",
            tmp_path / "q.onnx",
            "--target",
            "ort",
            "--num-frames",
            "2",
            "--no-gate",
        ],
        "export": ["export", art, "--out", tmp_path / "e.onnx", "--exporter", "torchscript", "--no-simplify"],
    }[command]
    refused(vs(*args), str(art), "sha256")
    assert not [p for p in tmp_path.iterdir() if p.name in ("r", "q.onnx", "e.onnx", "q.onnx.json", "e.onnx.json")]


def test_lineage_cannot_be_spoofed(arts, tmp_path):
    """A parent whose manifest claims another file's hash is refused; the child records the parent's real hash."""
    from vsseg_edge.core.fileio import sha256_file

    parent = copy_artifact(arts["onnx"], tmp_path)
    edit_manifest(parent, sha256=sha256_file(arts["int8"]))  # claims to be the INT8 model
    r = vs(
        "calibrate",
        parent,
        "--frames",
        arts["synth"],
        "--out",
        tmp_path / "q.onnx",
        "--target",
        "ort",
        "--num-frames",
        "2",
        "--no-gate",
    )
    refused(r, "sha256")
    honest = copy_artifact(arts["onnx"], tmp_path / "honest")
    out = tmp_path / "honest" / "q.onnx"
    assert (
        vs(
            "calibrate",
            honest,
            "--frames",
            arts["synth"],
            "--out",
            out,
            "--target",
            "ort",
            "--num-frames",
            "2",
            "--no-gate",
        ).code
        == 0
    )
    assert json.loads(out.with_name("q.onnx.json").read_text())["parent"]["sha256"] == sha256_file(honest)


def test_the_hash_is_cached_by_size_and_times(arts, tmp_path, monkeypatch):
    """A second open does not rehash an unchanged file; a changed one (same size, same mtime) is rehashed."""
    from vsseg_edge.core import fileio, hashcache
    from vsseg_edge.core.manifest import read_manifest

    monkeypatch.setenv("VSSEG_EDGE_CACHE", str(tmp_path / "cache"))
    art = copy_artifact(arts["onnx"], tmp_path)
    calls = []
    real = fileio.sha256_file
    monkeypatch.setattr(fileio, "sha256_file", lambda p, *a: calls.append(p) or real(p, *a))
    read_manifest(art, verify=True)
    read_manifest(art, verify=True)
    assert len(calls) == 1 and (tmp_path / "cache" / hashcache.CACHE_NAME).is_file()
    st = art.stat()
    data = bytearray(art.read_bytes())
    data[-1] ^= 0xFF  # same size
    art.write_bytes(bytes(data))
    os.utime(art, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime
    with pytest.raises(Exception, match="sha256 does not match"):
        read_manifest(art, verify=True)
    assert len(calls) == 2


def test_an_unwritable_cache_only_costs_a_rehash(arts, tmp_path, monkeypatch):
    cache = tmp_path / "cache-file"
    cache.write_text("not a folder")
    monkeypatch.setenv("VSSEG_EDGE_CACHE", str(cache))
    r = vs("run", arts["onnx"], "--source", arts["frames"], "--max-frames", "1")
    assert r.code == 0, r.err[-2000:]


@pytest.mark.parametrize(
    "field, value, named",
    [
        ("input.preprocess.height", "abc", "height"),
        ("input.preprocess.mean", None, "mean"),
        ("input.preprocess.std", [1, 2], "std"),
        ("input", "x", "input"),
        ("classes", "notalist", "classes"),
        ("classes", [1, 2], "classes"),
        ("output", 7, "output"),
        ("kind", ["onnx"], "kind"),
        ("sha256", 12, "sha256"),
        ("parent", "m.pt", "parent"),
    ],
)
def test_manifest_fields_of_the_wrong_type(arts, tmp_path, field, value, named):
    art = copy_artifact(arts["onnx"], tmp_path)
    edit_manifest(art, **{field: value})
    refused(vs("run", art, "--source", arts["frames"]), named)


def test_a_manifest_that_is_not_json(arts, tmp_path):
    art = copy_artifact(arts["onnx"], tmp_path)
    art.with_name(art.name + ".json").write_text("{not json")
    refused(vs("run", art, "--source", arts["frames"]), "not valid JSON")
