"""`vsseg-edge serve MODEL`: the model on NVIDIA Triton Inference Server, through PyTriton.

    client ──HTTP / gRPC──► tritonserver (PyTriton's wheel) ── dynamic batcher ──► Python backend stub
      ──shared memory──► this process: one FrameSegmenter per instance (its own backend) ──► labels

Triton does the protocols (KServe v2 over HTTP and gRPC), the health endpoints (/v2/health/live, /ready), the
Prometheus metrics (/metrics on the metrics port), request validation (name, dtype, rank, the 3 channels, batch
size), queueing and dynamic batching: requests of equal shape that wait together are concatenated into one call,
up to `max_batch` frames. The inference itself is the project's own backend (TensorRT, onnxruntime or torch,
chosen by the artifact as in `run`), so served labels are what `run` computes for the same frame. A zoo name
serves the packaged checkpoint (`zoo.resolve`, as `run` does) under that name.

The model has one input `frames` (N×H×W×3 uint8 BGR, any size; see `segmenter`) and one output `labels`
(N×H×W uint8). `instances` binds that many inference callables, each with its own backend (its own session or
execution context); Triton hands batches to whichever is free. A request the model cannot take (an empty frame,
a wrong size for a model that does not resize) gets an error response; the server goes on serving.

PyTriton starts tritonserver as a child process with a workspace under ~/.cache/pytriton; `stop()` (also on
SIGINT / SIGTERM in `serve_forever`, and on any failure to start) ends it and removes the workspace. Triton's
log goes to a file in a temporary folder, whose tail is quoted when the server fails.
"""

from __future__ import annotations

import re
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import VssegError

INPUT, OUTPUT = "frames", "labels"
_HANDSHAKE = "Timeout occurred while waiting for config file"  # PyTriton's stub ↔ proxy handshake (1 s)


@dataclass(frozen=True)
class ServeConfig:
    """How to serve: addresses, Triton's batching and instances, and the backend options."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int | None = None  # default: http_port + 1
    metrics_port: int | None = None  # default: http_port + 2
    max_batch: int = 8
    instances: int = 1
    queue_delay_us: int = 0  # Triton's max_queue_delay_microseconds: how long a request may wait for others
    name: str | None = None  # default: from the artifact's file name
    backend: str | None = None
    threads: int = 0  # onnxruntime intra-op threads per instance (0: its default)
    exit_timeout_s: int = 5

    def __post_init__(self):
        checks = [
            (self.max_batch >= 1, f"--max-batch {self.max_batch}: expected a positive number"),
            (self.instances >= 1, f"--instances {self.instances}: expected a positive number"),
            (self.queue_delay_us >= 0, f"--queue-delay-us {self.queue_delay_us}: expected 0 or more"),
            (
                all(p is None or 0 < p < 65536 for p in (self.http_port, self.grpc_port, self.metrics_port)),
                "--port: expected a TCP port (1-65535)",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise VssegError(msg)

    @property
    def ports(self) -> tuple[int, int, int]:
        return (self.http_port, self.grpc_port or self.http_port + 1, self.metrics_port or self.http_port + 2)


def served_name(model: Path, name: str | None = None) -> str:
    """The model's name on the server: `name`, else the artifact's file name without its suffix; Triton takes
    letters, digits, '.', '_' and '-'."""
    if name is not None:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise VssegError(f"--name {name!r}: Triton model names take letters, digits, '.', '_' and '-' only")
        return name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model).stem).strip("._") or "model"


def check_ports_free(host: str, ports: tuple[int, int, int]) -> None:
    """Refuse, at once and in one line, a port another process listens on (tritonserver would exit, and PyTriton
    would wait for it for a minute)."""
    import socket

    for what, port in zip(("HTTP (--port)", "gRPC (--port + 1)", "metrics (--port + 2)"), ports):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise VssegError(f"--port: {host}:{port} for {what} is not free ({exc.strerror or exc})") from None


class _HandshakeTimeout(VssegError):
    """PyTriton's start-up handshake timed out (see `SegmentationServer.start_retrying`)."""


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _log_tail(path: Path, lines: int = 3) -> str:
    text = [ln.strip() for ln in _read(path).splitlines() if ln.strip()]
    if not text:
        return "no server log"
    errors = [ln for ln in text if ln[:1] == "E" or "error" in ln.lower()]
    return " | ".join((errors or text)[-lines:])[:600]


class SegmentationServer:
    """One artifact served on PyTriton's Triton. `start()` returns once the model is ready; use as a context."""

    def __init__(self, model: str | Path, config: ServeConfig | None = None):
        """`model`: an artifact's path or a zoo name (its packaged checkpoint, served by the torch backend under
        the zoo name, as `run` runs it)."""
        from ..zoo import is_zoo_name, resolve

        self.config = config or ServeConfig()
        zoo_name = str(model) if is_zoo_name(model) else None
        self.model = resolve(model)
        self.name = served_name(self.model, self.config.name or zoo_name)
        self._triton = None
        self._backends: list = []
        self._tmp: tempfile.TemporaryDirectory | None = None

    # -- addresses -----------------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self.config.ports[0]}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.config.host}:{self.config.ports[1]}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.config.host}:{self.config.ports[2]}/metrics"

    def describe(self) -> str:
        be, spec = self._backends[0], self._backends[0].preprocess_spec
        resize = ("any H×W, resized to " if spec.resize == "stretch" else "exactly ") + f"{spec.height}x{spec.width}"
        return "\n".join(
            [
                (
                    f"serving {self.name!r} on Triton (PyTriton), {self.config.instances} instance(s), "
                    f"dynamic batching up to {self.config.max_batch}: {be.describe()}"
                ),
                f"  input  {INPUT!r}: N×H×W×3 uint8 BGR ({resize}); output {OUTPUT!r}: N×H×W uint8 labels",
                f"  HTTP    {self.http_url}/v2/models/{self.name}/infer   (health {self.http_url}/v2/health/ready)",
                f"  gRPC    {self.grpc_url.removeprefix('grpc://')}",
                f"  metrics {self.metrics_url}",
            ]
        )

    # -- lifecycle -----------------------------------------------------------------------------------------
    def _open_backends(self) -> list:
        from ..runtime.backends import infer_backend_name, open_backend
        from ..runtime.run import backend_options

        options = backend_options(
            self.config.backend or infer_backend_name(self.model),
            threads=self.config.threads,
            fp16=None,
            cuda_graph=False,
        )
        for _ in range(self.config.instances):
            self._backends.append(open_backend(self.model, self.config.backend, **options))
        return self._backends

    def start(self) -> SegmentationServer:
        from ._triton import pytriton, stub_python_problem

        triton_mod, mc, decorators = pytriton()
        problem = stub_python_problem()
        if problem:
            raise VssegError(problem)
        check_ports_free(self.config.host, self.config.ports)
        from .segmenter import FrameSegmenter

        try:
            backends = self._open_backends()
            self._tmp = tempfile.TemporaryDirectory(prefix="vsseg-serve-")
            log = Path(self._tmp.name) / "tritonserver.log"
            http, grpc, metrics = self.config.ports
            host = self.config.host
            cfg = triton_mod.TritonConfig(
                http_address=host,
                http_port=http,
                grpc_address=host,
                grpc_port=grpc,
                metrics_address=host,
                metrics_port=metrics,
                log_file=log,
                log_verbose=0,
                exit_timeout_secs=self.config.exit_timeout_s,
            )
            self._triton = triton_mod.Triton(config=cfg)
            self._triton.bind(
                model_name=self.name,
                infer_func=[_infer_callable(FrameSegmenter(be), decorators.batch) for be in backends],
                inputs=[mc.Tensor(name=INPUT, dtype=_np().uint8, shape=(-1, -1, 3))],
                outputs=[mc.Tensor(name=OUTPUT, dtype=_np().uint8, shape=(-1, -1))],
                config=mc.ModelConfig(
                    max_batch_size=self.config.max_batch,
                    batcher=mc.DynamicBatcher(max_queue_delay_microseconds=self.config.queue_delay_us),
                ),
                strict=True,
            )
            try:
                self._triton.run()
            except Exception as exc:
                error = _HandshakeTimeout if _HANDSHAKE in _read(log) + str(exc) else VssegError
                raise error(
                    f"Triton did not start ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}; "
                    f"server log: {_log_tail(log)})"
                ) from None
        except BaseException:
            self.stop()
            raise
        return self

    def start_retrying(self, attempts: int = 3) -> SegmentationServer:
        """`start`, again after a failure of PyTriton's start-up handshake: its Python stub gives this process one
        second to answer, which a busy machine can miss; any other failure is raised at once."""
        for attempt in range(1, attempts + 1):
            try:
                return self.start()
            except _HandshakeTimeout:
                if attempt == attempts:
                    raise
        return self

    def is_alive(self) -> bool:
        return self._triton is not None and self._triton.is_alive()

    def log_tail(self) -> str:
        return _log_tail(Path(self._tmp.name) / "tritonserver.log") if self._tmp else "no server log"

    def stop(self) -> None:
        """Stop Triton (its child processes and workspace), close every backend; safe to call more than once."""
        triton, self._triton = self._triton, None
        try:
            if triton is not None:
                triton.stop()
        finally:
            for be in self._backends:
                be.close()
            self._backends = []
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _np():
    import numpy as np

    return np


def _infer_callable(segmenter, batch):
    """PyTriton's callable for one instance: Triton's concatenated batch of frames → labels."""

    @batch
    def infer(**inputs):
        return {OUTPUT: segmenter(inputs[INPUT])}

    return infer


def serve_forever(server: SegmentationServer, started=None, poll_s: float = 1.0) -> None:
    """Serve until SIGINT / SIGTERM (or the server dies), always stopping it first; then raise `Interrupted`
    (the CLI exits 128 + the signal number) or, for a server that died, a one-line VssegError."""
    from ..core.errors import Interrupted

    received: list[int] = []
    stop = threading.Event()

    def handler(signum, _frame):
        received.append(signum)
        stop.set()

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, handler)
    try:
        server.start_retrying()
        if started is not None and not received:
            started(server)
        while not stop.wait(poll_s):
            if not server.is_alive():
                raise VssegError(f"the Triton server stopped unexpectedly (server log: {server.log_tail()})")
    finally:
        server.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    raise Interrupted(received[0], "stopped the Triton server")
