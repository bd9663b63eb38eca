"""User-facing errors.

A `VssegError` is a mistake in the user's input (a missing file, a wrong shape, an unknown key).
The CLI prints its message on one line and exits with a non-zero code, without a traceback.
Bugs raise anything else and keep their traceback.
"""


class VssegError(Exception):
    """An error the user can fix; its message names the input and what was expected."""


class MissingDependency(VssegError):
    """An optional package is not installed; the message says how to install it."""


# The extra that brings each optional package (pyproject.toml's [project.optional-dependencies]).
EXTRAS = {
    "torch": "train",
    "torchvision": "train",
    "onnx": "export",
    "onnxsim": "export",
    "onnxscript": "export",
    "onnxconverter_common": "export",
    "onnxruntime": "edge",
    "av": "edge",
    "tensorrt": "trt",
    "cuda": "trt",
    "polygraphy": "trt",
    "modelopt": "calib-trt",
    "onnx_graphsurgeon": "calib-trt",
    "matplotlib": "plot",
    "pytriton": "serve",
    "tritonclient": "serve",
}
OPENCV_HINT = (
    "pip install 'vsseg-edge[edge]' (headless) or 'vsseg-edge[gui]' (with windows for --show), not both; "
    "on a Jetson, JetPack's OpenCV (python3-opencv, with GStreamer)"
)


def install_hint(module: str) -> str | None:
    """`pip install 'vsseg-edge[extra]'` for an optional package (by its import name), or None if unknown."""
    root = module.split(".")[0]
    if root == "cv2":
        return OPENCV_HINT
    extra = EXTRAS.get(root)
    return f"pip install 'vsseg-edge[{extra}]'" if extra else None


def require(module: str, extra: str | None = None, pip_name: str | None = None):
    """Import an optional module or raise a one-line MissingDependency with the install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = (
            f"pip install 'vsseg-edge[{extra}]'" if extra else install_hint(module)
        ) or f"pip install {pip_name or module}"
        raise MissingDependency(f"{module} is not installed ({exc}); install it with: {hint}") from None


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM reached a command (`core.signals`): it unwinds, every `finally` cleans up, and the
    CLI exits 128 + the signal number (130 for SIGINT, 143 for SIGTERM).

    A BaseException, like KeyboardInterrupt, so that `except Exception` handlers do not swallow it.
    """

    def __init__(self, signum: int, detail: str = ""):
        import signal

        self.signum = int(signum)
        self.detail = detail
        try:
            name = signal.Signals(self.signum).name
        except ValueError:
            name = f"signal {self.signum}"
        super().__init__(f"interrupted by {name}" + (f"; {detail}" if detail else ""))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
