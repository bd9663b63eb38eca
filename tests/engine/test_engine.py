"""Engine building logic on CPU. TensorRT is not installable here: the build itself is replaced by a
named test double (`FakeTensorRT`, `fake_serialize`) that only checks OUR logic — which API each
version gets, caching, manifests, errors. Nothing here verifies TensorRT."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pytest

from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.manifest import read_manifest, write_manifest
from vsseg_edge.core.preprocess import PreprocessSpec
from vsseg_edge.engine import builder as builder_mod
from vsseg_edge.engine.cache import check_engine_manifest, engine_key
from vsseg_edge.engine.device import GpuInfo
from vsseg_edge.engine.policy import BuildSettings, plan_build

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A small conv net exported to ONNX at 32x64 with a vsseg-edge manifest (static, and dynamic batch)."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 1),
        torch.nn.Upsample(scale_factor=1.0, mode="bilinear"),
    )
    net.eval()
    d = tmp_path_factory.mktemp("onnx")
    paths = {}
    for name, dyn in (("static", None), ("dynamic", {"x": {0: "batch"}, "y": {0: "batch"}})):
        p = d / f"{name}.onnx"
        torch.onnx.export(
            net,
            torch.randn(1, 3, 32, 64),
            str(p),
            input_names=["x"],
            output_names=["y"],
            opset_version=17,
            dynamo=False,
            dynamic_axes=dyn,
        )
        write_manifest(
            p, "onnx", model="tiny", classes=["a", "b", "c", "d"], preprocess=PreprocessSpec(height=32, width=64)
        )
        paths[name] = p
    return paths


@pytest.mark.parametrize(
    "version,flags,strongly,source",
    [
        ("8.6.1", ("FP16",), False, "as-is"),
        ("10.3.0", ("FP16",), False, "as-is"),
        ("11.0.0", (), True, "fp16-convert"),
    ],
)
def test_fp16_plan_per_version(version, flags, strongly, source):
    plan = plan_build(BuildSettings(precision="fp16"), version, "onnx")
    assert (plan.flags, plan.strongly_typed, plan.onnx_source) == (flags, strongly, source)
    assert plan.explicit_batch_flag == version.startswith("8.")


def test_int8_plan_per_version():
    qdq = plan_build(BuildSettings(precision="int8"), "8.6.1", "qdq_onnx")
    assert qdq.int8_mode == "qdq" and qdq.flags == ("INT8", "FP16")
    assert plan_build(BuildSettings(precision="int8"), "11.1", "qdq_onnx").flags == ()
    legacy = plan_build(BuildSettings(precision="int8"), "10.3", "onnx", has_calibration_frames=True)
    assert legacy.int8_mode == "calibrator" and any("deprecated" in w for w in legacy.warnings)
    assert not plan_build(BuildSettings(precision="int8"), "8.6", "onnx", has_calibration_frames=True).warnings
    with pytest.raises(VssegError, match="TensorRT 11 removed implicit INT8 calibration"):
        plan_build(BuildSettings(precision="int8"), "11.0", "onnx", has_calibration_frames=True)
    with pytest.raises(VssegError, match="--calib-frames"):
        plan_build(BuildSettings(precision="int8"), "10.3", "onnx")


def test_plan_refusals():
    with pytest.raises(VssegError, match="no fast INT8"):
        plan_build(BuildSettings(precision="int8"), "10.3", "qdq_onnx", compute_capability=(5, 3))
    with pytest.raises(VssegError, match="no DLA cores"):
        plan_build(BuildSettings(dla_core=0), "8.6", "onnx", num_dla_cores=0)
    with pytest.raises(VssegError, match="not supported"):
        plan_build(BuildSettings(), "8.5.3", "onnx")
    with pytest.raises(VssegError, match="not of the form"):
        plan_build(BuildSettings(), "ten", "onnx")
    assert plan_build(BuildSettings(), "11", "onnx").trt_version == (11, 0)
    with pytest.raises(VssegError, match="needs TensorRT 10"):
        plan_build(BuildSettings(strongly_typed=True), "8.6", "onnx")
    with pytest.raises(VssegError, match="--batch"):
        BuildSettings(batch=(4, 2, 8))
    assert plan_build(BuildSettings(dla_core=1), "8.6", "onnx", num_dla_cores=2).flags == ("FP16",)
    assert plan_build(BuildSettings(dla_core=3), "10.3", "onnx").flags == ("FP16",)  # --explain: cores not asked
    with pytest.raises(VssegError, match="DLA cores 0..1"):
        plan_build(BuildSettings(dla_core=3), "10.3", "onnx", num_dla_cores=2)


def test_fp16_onnx_conversion_keeps_io_and_accuracy(tiny_onnx, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from vsseg_edge.engine.fp16 import convert_to_fp16

    dst = tmp_path / "m.fp16.onnx"
    convert_to_fp16(tiny_onnx["static"], dst)
    m = onnx.load(str(dst))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O kept FP32
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)
    x = np.random.default_rng(0).normal(size=(1, 3, 32, 64)).astype(np.float32)
    a = ort.InferenceSession(str(tiny_onnx["static"])).run(None, {"x": x})[0]
    b = ort.InferenceSession(str(dst)).run(None, {"x": x})[0]
    assert np.abs(a - b).max() < 2e-2 and (a.argmax(1) == b.argmax(1)).mean() > 0.99


def test_check_shapes(tiny_onnx):
    assert builder_mod.check_shapes(tiny_onnx["static"], BuildSettings())[1] == [1, 3, 32, 64]
    with pytest.raises(VssegError, match="dynamic batch; give its range with --batch"):
        builder_mod.check_shapes(tiny_onnx["dynamic"], BuildSettings())
    assert builder_mod.check_shapes(tiny_onnx["dynamic"], BuildSettings(batch=(1, 2, 4)))[1][1:] == [3, 32, 64]
    with pytest.raises(VssegError, match="batch is static"):
        builder_mod.check_shapes(tiny_onnx["static"], BuildSettings(batch=(1, 2, 4)))


class FakeTensorRT(types.SimpleNamespace):
    """TEST DOUBLE of the `tensorrt` module: a version string and a Builder with no DLA. Not TensorRT."""

    def __init__(self, version):
        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        class Builder:
            num_DLA_cores = 0

            def __init__(self, logger):
                pass

        super().__init__(__version__=version, Logger=Logger, Builder=Builder)


@pytest.fixture
def fake_trt(monkeypatch):
    calls = []

    def fake_serialize(trt, onnx_path, plan, settings, input_name, dims, calibrator):  # TEST DOUBLE of the build
        calls.append({"onnx": str(onnx_path), "plan": plan, "input": input_name})
        return b"not-an-engine:" + plan.to_dict()["trt_version"].encode()

    state = {"version": "10.3.0", "devices": []}
    monkeypatch.setattr(builder_mod, "import_tensorrt", lambda: FakeTensorRT(state["version"]))
    monkeypatch.setattr(builder_mod, "gpu_info", lambda i=0: GpuInfo(i, "Test GPU", (8, 7)))
    monkeypatch.setattr(builder_mod, "use_device", state["devices"].append)
    monkeypatch.setattr(builder_mod, "_serialize", fake_serialize)
    return state, calls


def test_build_writes_manifest_and_uses_cache(tiny_onnx, tmp_path, fake_trt):
    state, calls = fake_trt
    out = tmp_path / "m.fp16.engine"
    man = builder_mod.build_engine(
        tiny_onnx["static"], out, BuildSettings(precision="fp16"), cache_dir=tmp_path / "cache", log=lambda *_: None
    )
    assert out.read_bytes() == b"not-an-engine:10.3" and len(calls) == 1
    assert man["kind"] == "engine" and man["tensorrt"]["gpu"]["compute_capability"] == [8, 7]
    on_disk = read_manifest(out, kind="engine")
    assert on_disk["build"]["plan"]["flags"] == ["FP16"] and on_disk["input"]["shape"] == [1, 3, 32, 64]
    assert read_manifest(out, kind="engine", verify=True)["parent"]["file"] == "static.onnx"
    builder_mod.build_engine(
        tiny_onnx["static"],
        tmp_path / "again.engine",
        BuildSettings(precision="fp16"),
        cache_dir=tmp_path / "cache",
        log=lambda *_: None,
    )
    assert len(calls) == 1  # served from the cache
    state["version"] = "11.0.0"  # another TensorRT: another key, a new build from an FP16 ONNX
    builder_mod.build_engine(
        tiny_onnx["static"],
        tmp_path / "v11.engine",
        BuildSettings(precision="fp16"),
        cache_dir=tmp_path / "cache",
        log=lambda *_: None,
    )
    assert len(calls) == 2 and calls[1]["onnx"].endswith(".fp16.onnx") and calls[1]["plan"].strongly_typed
    assert not list(tmp_path.glob(".*fp16.onnx"))  # the temporary FP16 ONNX is cleaned up


def test_failed_build_leaves_no_engine(tiny_onnx, tmp_path, fake_trt, monkeypatch):
    def broken(*a, **k):
        raise VssegError("TensorRT failed to build the engine")

    monkeypatch.setattr(builder_mod, "_serialize", broken)
    out = tmp_path / "m.engine"
    with pytest.raises(VssegError):
        builder_mod.build_engine(tiny_onnx["static"], out, BuildSettings(), log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []


def test_engine_key_and_compat():
    gpu = GpuInfo(0, "Orin", (8, 7)).to_dict()
    k = engine_key("abc", BuildSettings().to_dict(), "10.3.0", gpu, {"flags": ["FP16"]})
    assert k != engine_key("abc", BuildSettings().to_dict(), "10.3.1", gpu, {"flags": ["FP16"]})
    assert k != engine_key("abd", BuildSettings().to_dict(), "10.3.0", gpu, {"flags": ["FP16"]})
    man = {"tensorrt": {"version": "10.3.0", "gpu": gpu}}
    check_engine_manifest(man, "10.3.0", gpu, "m.engine")
    with pytest.raises(VssegError, match="built with TensorRT 10.3.0, this machine has 8.6.2"):
        check_engine_manifest(man, "8.6.2", gpu, "m.engine")
    with pytest.raises(VssegError, match="built for Orin"):
        check_engine_manifest(man, "10.3.0", GpuInfo(0, "H100", (9, 0)).to_dict(), "m.engine")


def test_cli_explain_and_missing_tensorrt(tiny_onnx):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "vsseg_edge.cli",
            "build-engine",
            str(tiny_onnx["static"]),
            "--fp16",
            "--explain",
            "--for-trt",
            "11.0",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["plan"]["onnx_source"] == "fp16-convert"
    r = subprocess.run(
        [sys.executable, "-m", "vsseg_edge.cli", "build-engine", str(tiny_onnx["static"]), "--int8"],
        capture_output=True,
        text=True,
    )
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert r.returncode == 2 and r.stderr.startswith("error: tensorrt is not installed")
        assert r.stderr.count("\n") == 1


def test_qdq_structure_is_checked_before_building(tiny_onnx, tmp_path, fake_trt):
    """A 'qdq_onnx' that is not a TensorRT-ready Q/DQ graph is refused before TensorRT is touched."""
    import shutil

    state, calls = fake_trt
    fake = tmp_path / "fake.int8.qdq.onnx"
    shutil.copy(tiny_onnx["static"], fake)
    write_manifest(
        fake,
        "qdq_onnx",
        model="tiny",
        classes=["a", "b", "c", "d"],
        preprocess=PreprocessSpec(height=32, width=64),
        precision="int8",
        target="trt",
    )
    with pytest.raises(VssegError):
        builder_mod.build_engine(fake, tmp_path / "x.engine", BuildSettings(precision="int8"), log=lambda *_: None)
    assert calls == [] and not (tmp_path / "x.engine").exists()


# ------------------------------------------------------------ per-version knobs and platform checks ----
@pytest.mark.parametrize(
    "cc,int8,fp16",
    [
        ((5, 3), False, True),
        ((6, 0), False, True),
        ((6, 1), True, False),
        ((6, 2), False, True),
        ((7, 0), True, True),
        ((8, 7), True, True),
    ],
)
def test_fast_precision_table(cc, int8, fp16):
    from vsseg_edge.engine.policy import has_fast

    assert (has_fast("int8", cc), has_fast("fp16", cc)) == (int8, fp16)


def test_gpu_precision_refusals_prefer_tensorrts_answer():
    with pytest.raises(VssegError, match=r"--fp16: this GPU \(sm_61\) has no fast FP16"):
        plan_build(BuildSettings(precision="fp16"), "8.6", "onnx", compute_capability=(6, 1))
    with pytest.raises(VssegError, match="--int8: this GPU .* no fast INT8"):  # TensorRT says no: trust it
        plan_build(
            BuildSettings(precision="int8"), "8.6", "qdq_onnx", compute_capability=(8, 7), platform_fast={"int8": False}
        )
    assert (
        plan_build(
            BuildSettings(precision="int8", dla_core=0), "8.6", "qdq_onnx", compute_capability=(6, 2), num_dla_cores=2
        ).int8_mode
        == "qdq"
    )  # DLA does INT8 whatever the GPU does


@pytest.mark.parametrize(
    "version,strongly,flag", [("8.6.1", False, False), ("10.3.0", True, True), ("11.0.0", True, False)]
)
def test_strongly_typed_network_flag_only_where_it_means_something(version, strongly, flag):
    """TRT 11 deprecates and ignores NetworkDefinitionCreationFlag.STRONGLY_TYPED: the plan does not set it."""
    settings = BuildSettings(precision="fp16", strongly_typed=True if version.startswith("10") else None)
    plan = plan_build(settings, version, "onnx")
    assert (plan.strongly_typed, plan.strongly_typed_flag) == (strongly, flag)


def _fake_trt_with_builder(version, **builder_attrs):
    trt = FakeTensorRT(version)
    trt.Builder = type("Builder", (), {"__init__": lambda self, logger: None, **builder_attrs})
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    return trt


def test_platform_asks_tensorrt_only_where_the_query_exists():
    trt = _fake_trt_with_builder("8.6.1", platform_has_fast_int8=False, num_DLA_cores=2)
    assert builder_mod._platform(trt, BuildSettings(precision="int8")) == (None, {"int8": False})
    assert builder_mod._platform(trt, BuildSettings(precision="int8", dla_core=1)) == (2, {"int8": False})
    trt105 = _fake_trt_with_builder("10.5.0", platform_has_fast_int8=False)  # deprecated there: not asked
    assert builder_mod._platform(trt105, BuildSettings(precision="int8")) == (None, {})
    trt11 = _fake_trt_with_builder("11.0.0")  # removed in 11
    assert builder_mod._platform(trt11, BuildSettings(precision="fp16")) == (None, {})


def test_polygraphy_loaders_take_our_keywords(tiny_onnx, tmp_path):
    """Constructs the loader chain with the INSTALLED Polygraphy (keyword names real; nothing is built)."""
    pytest.importorskip("polygraphy")
    from polygraphy.backend.trt import EngineBytesFromNetwork, PostprocessConfig

    trt = _fake_trt_with_builder("10.3.0")
    dims = [1, 3, 32, 64]
    settings = BuildSettings(precision="int8", timing_cache=str(tmp_path / "t.cache"), workspace_mib=64)
    plan = plan_build(settings, "10.3.0", "qdq_onnx")
    chain = builder_mod._loaders(trt, tiny_onnx["static"], plan, settings, "x", dims, None)
    assert isinstance(chain, EngineBytesFromNetwork) and chain.timing_cache_path == str(tmp_path / "t.cache")
    cfg = chain._config
    assert (cfg.fp16, cfg.int8, cfg.use_dla) == (True, True, False)
    assert cfg.memory_pool_limits == {"WORKSPACE": 64 << 20} and cfg.timing_cache_path is None  # no file yet
    assert chain._network.strongly_typed is False
    typed = BuildSettings(precision="fp16", strongly_typed=True, batch=(1, 2, 4), dla_core=1)
    plan = plan_build(typed, "10.3.0", "onnx", num_dla_cores=2)
    chain = builder_mod._loaders(trt, tiny_onnx["dynamic"], plan, typed, "x", ["batch", 3, 32, 64], None)
    assert chain._network.strongly_typed is True and isinstance(chain._config, PostprocessConfig)
    inner = chain._config._config
    assert (inner.fp16, inner.use_dla, inner.allow_gpu_fallback) == (False, True, True)
    (profile,) = inner.profiles
    assert tuple(profile["x"].min) == (1, 3, 32, 64) and tuple(profile["x"].max) == (4, 3, 32, 64)


def test_polygraphy_failure_is_one_line(monkeypatch, tmp_path):
    pytest.importorskip("polygraphy")
    from polygraphy.exception import PolygraphyException

    def chain(*args):
        def run():
            raise PolygraphyException("fp16 in CreateConfig is not available on TensorRT version 11.0.0.\ntrace")

        return run

    monkeypatch.setattr(builder_mod, "_loaders", chain)
    plan = plan_build(BuildSettings(), "11.0.0", "onnx")
    with pytest.raises(VssegError) as info:
        builder_mod._serialize(FakeTensorRT("11.0.0"), tmp_path / "m.onnx", plan, BuildSettings(), "x", [1], None)
    assert "\n" not in str(info.value) and "not available on TensorRT version 11.0.0" in str(info.value)


def test_timing_cache_from_another_tensorrt_is_not_reused(tmp_path):
    from vsseg_edge.engine.cache import prepare_timing_cache, tag_timing_cache

    gpu, logs = GpuInfo(0, "Orin", (8, 7)).to_dict(), []
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"tactics")
    tag_timing_cache(str(cache), "10.3.0", gpu)
    prepare_timing_cache(str(cache), "10.3.0", gpu, logs.append)
    assert cache.read_bytes() == b"tactics" and logs == []
    prepare_timing_cache(str(cache), "10.7.0", gpu, logs.append)  # another TensorRT: a new cache
    assert not cache.exists() and not (tmp_path / "t.cache.json").exists() and "TensorRT 10.7.0" in logs[0]
    cache.write_bytes(b"untagged")
    prepare_timing_cache(str(cache), "10.3.0", gpu, logs.append)
    assert not cache.exists()


def test_build_uses_the_requested_device_and_opt_batch_for_calibration(tiny_onnx, tmp_path, fake_trt, monkeypatch):
    state, calls = fake_trt
    seen = {}

    def fake_calibrator(trt, onnx_path, onnx_man, frames, out, *, batch_size=1):  # TEST DOUBLE
        seen["batch"] = batch_size
        return "calibrator"

    monkeypatch.setattr(builder_mod, "_legacy_calibrator", fake_calibrator)
    settings = BuildSettings(precision="int8", batch=(1, 4, 8))
    builder_mod.build_engine(
        tiny_onnx["dynamic"], tmp_path / "m.engine", settings, calib_frames="frames", device=1, log=lambda *_: None
    )
    assert state["devices"] == [1] and seen["batch"] == 4 and calls[0]["plan"].int8_mode == "calibrator"
