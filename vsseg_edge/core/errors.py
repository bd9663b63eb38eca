"""User-facing errors.

A `VssegError` is a mistake in the user's input (a missing file, a wrong shape, an unknown key).
The CLI prints its message on one line and exits with a non-zero code, without a traceback.
Bugs raise anything else and keep their traceback.
"""


class VssegError(Exception):
    """An error the user can fix; its message names the input and what was expected."""


class MissingDependency(VssegError):
    """An optional package is not installed; the message says how to install it."""


def require(module: str, extra: str | None = None, pip_name: str | None = None):
    """Import an optional module or raise a one-line MissingDependency with the install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f"pip install 'vsseg-edge[{extra}]'" if extra else f"pip install {pip_name or module}"
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
