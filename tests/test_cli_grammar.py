"""One CLI grammar: commands in pipeline order, `-o` = `--out` wherever it exists, a default shown for every
option, one line with the exact `pip install 'vsseg-edge[…]'` for a missing optional package, engine names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from vsseg_edge.cli import PIPELINE_ORDER, app

COMMAND = typer.main.get_command(app)


def _commands(group=COMMAND, prefix=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


def _options(cmd):
    return [p for p in cmd.params if getattr(p, "param_type_name", "") == "option" and p.name != "help"]


def test_top_level_help_lists_commands_in_pipeline_order():
    out = CliRunner().invoke(app, ["--help"]).output
    rows = [re.match(r"^│ (\S+)\s{2,}", line) for line in out.splitlines()]
    listed = [m[1] for m in rows if m and m[1] in COMMAND.commands]
    expected = [c for c in PIPELINE_ORDER if c in COMMAND.commands]
    assert [c for c in listed if c in PIPELINE_ORDER] == expected
    assert (
        listed.index("data")
        < listed.index("train")
        < listed.index("export")
        < listed.index("calibrate")
        < listed.index("build-engine")
        < listed.index("run")
        < listed.index("bench")
    )
    assert listed[-2:] == ["doctor", "demo"]


def test_dash_o_means_out_wherever_it_exists():
    seen = {}
    for path, cmd in _commands():
        for p in _options(cmd):
            if "-o" in p.opts + p.secondary_opts:
                seen[" ".join(path)] = p.opts
    assert seen and all("--out" in opts for opts in seen.values()), seen
    assert {"train", "export", "calibrate", "build-engine", "bench", "data synth"} <= set(seen)


def test_every_option_shows_its_default():
    missing = []
    for path, cmd in _commands():
        for p in _options(cmd):
            if p.required or (p.is_flag and not p.secondary_opts and p.default in (False, None)):
                continue  # required options, and on/off flags (off unless given)
            if p.default is None and not isinstance(p.show_default, str):
                missing.append(f"{' '.join(path)} {p.opts[0]}")
            elif p.show_default is False:
                missing.append(f"{' '.join(path)} {p.opts[0]} (hidden)")
    assert not missing, missing


def test_calibrate_help_shows_the_built_in_preset_values():
    from vsseg_edge.calib.config import CalibConfig

    out = CliRunner().invoke(app, ["calibrate", "--help"], env={"COLUMNS": "200"}).output
    cfg = CalibConfig()
    for value in (cfg.target, cfg.method, cfg.num_frames, cfg.threshold):
        assert f"[default: ({value})]" in out


def test_train_dash_o_is_the_output_folder_and_an_override_there_is_named(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\n")
    res = CliRunner().invoke(app, ["train", str(recipe), "-o", "iterations=200"])
    assert res.exit_code != 0 and "recipe overrides are --override iterations=200" in str(res.exception)


def test_engine_names_do_not_repeat_the_precision():
    from vsseg_edge.engine.commands import default_engine_path

    assert default_engine_path(Path("m.int8.qdq.onnx"), "int8") == Path("m.int8.engine")
    assert default_engine_path(Path("d/m.onnx"), "fp16") == Path("d/m.fp16.engine")
    assert default_engine_path(Path("m.fp16.onnx"), "fp16") == Path("m.fp16.engine")
    assert default_engine_path(Path("m.int8.qdq.onnx"), "fp16") == Path("m.int8.fp16.engine")


_BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
sys.argv = ['vsseg-edge', *{argv!r}]
from vsseg_edge.cli import main
main()
"""


@pytest.mark.parametrize(
    "blocked, argv, hint",
    [
        (
            ("torch",),
            ["train", "RECIPE"],
            "train needs torch, which is not installed; install it with: pip install 'vsseg-edge[train]'",
        ),
        (("onnxruntime",), ["run", "MODEL", "--source", "FRAMES"], "pip install 'vsseg-edge[edge]'"),
        (
            ("cv2",),
            ["run", "MODEL", "--source", "FRAMES"],
            "pip install 'vsseg-edge[edge]' (headless) or 'vsseg-edge[gui]'",
        ),
    ],
)
def test_a_missing_optional_package_is_one_line_with_the_extra(tmp_path, onnx_model, image_folder, blocked, argv, hint):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\n")
    argv = [{"RECIPE": str(recipe), "MODEL": str(onnx_model), "FRAMES": str(image_folder)}.get(a, a) for a in argv]
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCK.format(blocked=set(blocked), argv=argv)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: ") and hint in lines[0]


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    from tests.runtime.conftest import export_onnx, tiny_net

    pytest.importorskip("torch")
    return export_onnx(tiny_net(), tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    import cv2

    from tests.runtime.conftest import make_frames

    folder = tmp_path_factory.mktemp("frames")
    for i, f in enumerate(make_frames(2)):
        cv2.imwrite(str(folder / f"f{i}.png"), f)
    return folder
