"""The `edge` install (onnxruntime + OpenCV + PyAV, no torch, no onnx package): `import` a foreign ONNX, `run` it
with an H.264 video out, and use the Python API — in an interpreter where torch and onnx cannot be imported."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

BLOCKED = {"torch", "torchvision", "onnx", "onnxsim", "onnxscript", "onnxconverter_common", "tensorrt"}

SCRIPT = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: an edge install)", name=name)
sys.meta_path.insert(0, Block())
from typer.testing import CliRunner
from vsseg_edge.cli import app
for argv in {commands!r}:
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 0, (argv, r.output, repr(r.exception))
import numpy as np
from vsseg_edge import Segmenter
seg = Segmenter({model!r})
labels = seg(np.zeros((40, 60, 3), np.uint8))
assert labels.shape == (40, 60) and seg.classes == ["a", "b", "c"], (labels.shape, seg.classes)
bad = sorted(m for m in sys.modules if m.split('.')[0] in {blocked!r})
assert not bad, bad
print("edge ok")
"""


def test_import_run_and_api_without_torch_or_onnx(tmp_path):
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1)).eval()
    model = tmp_path / "foreign.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            torch.zeros(1, 3, 48, 64),
            str(model),
            input_names=["x"],
            output_names=["y"],
            opset_version=17,
            dynamo=False,
        )
    (tmp_path / "abc.txt").write_text("a\nb\nc\n")
    import cv2
    import numpy as np

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"f{i}.png"), np.full((48, 64, 3), 60 * i, np.uint8))
    commands = [
        ["import", str(model), "--classes", str(tmp_path / "abc.txt")],
        ["run", str(model), "--source", str(frames), "--save", str(tmp_path / "out.mp4")],
    ]
    code = SCRIPT.format(blocked=BLOCKED, commands=commands, model=str(model))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "edge ok" in proc.stdout, proc.stderr[-3000:]
    import json

    man = json.loads((tmp_path / "foreign.onnx.json").read_text())
    assert man["imported"]["onnx"] == {"checked": False}  # no onnx package: no checker, said so
    assert (tmp_path / "out.mp4").stat().st_size > 0
