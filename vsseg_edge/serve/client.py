"""`vsseg-edge serve --check URL`: a client and load test for a served segmentation model.

- `load_test`: N concurrent streams, each a thread with its own tritonclient connection sending one frame per
  request (N×H×W×3 uint8 with N = 1, as a camera does) in a closed loop: the next request leaves when the answer
  to the previous one is back. Throughput is the answers that arrived inside the timed window (after a warm-up)
  per second; latency is the client's time around `infer` (serialisation, transport, queueing in Triton, the
  batch the frame ran in, and the answer), p50/p90/p99 over every request sent inside the window; errors are
  counted with a few of their messages.
- `robustness_check`: requests a server must refuse (wrong dtype, 4 channels, no batch dimension, an empty frame,
  a batch over the maximum, an unknown input, a body that is not JSON), a client that sends half a request body
  and hangs up, and a gRPC call abandoned at its deadline; after each, a valid request must still be answered.
- `compare_labels`: the server's labels against the local backend's (the measurement core's per-frame path,
  `measure.predict`) on the same frames: identical frames and pixel agreement (`measure.agreement`).

Frames come from any `--source` that `run` takes (opened by `runtime.sources.open_source`), read once into memory
and cycled; each stream starts at another frame.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import numpy as np

from ..core.errors import VssegError
from .server import INPUT, OUTPUT


def parse_url(url: str) -> tuple[str, str]:
    """'grpc://host:8001' or 'http://host:8000' → (protocol, 'host:port'); a bare host:port is gRPC."""
    if "://" not in url:
        url = "grpc://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("grpc", "http") or not parts.hostname or parts.port is None:
        raise VssegError(f"--check {url}: expected grpc://HOST:PORT or http://HOST:PORT")
    return parts.scheme, f"{parts.hostname}:{parts.port}"


class Client:
    """A thin tritonclient wrapper: one connection, frames → labels, errors as VssegError(one line)."""

    def __init__(self, url: str, model: str | None = None, timeout_s: float = 60.0):
        from ._triton import tritonclient

        self.protocol, self.address = parse_url(url)
        self._tc = tritonclient(self.protocol)
        self.timeout_s = timeout_s
        if self.protocol == "http":
            self._client = self._tc.InferenceServerClient(
                self.address, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        else:
            self._client = self._tc.InferenceServerClient(self.address)
        self.model = model or self._only_model()

    def _only_model(self) -> str:
        try:
            index = self.call(self._client.get_model_repository_index)
        except VssegError as exc:
            raise VssegError(
                f"{exc}; name the served model with --model-name (PyTriton, and so `vsseg-edge "
                "serve`, restricts the model-repository endpoint)"
            ) from None
        names = [
            m["name"] if isinstance(m, dict) else m.name for m in (index if isinstance(index, list) else index.models)
        ]
        if len(names) != 1:
            raise VssegError(
                f"{self.address}: serves {len(names)} models ({', '.join(names) or 'none'}); name one with --model-name"
            )
        return names[0]

    def call(self, fn, *args, **kwargs):
        """Run a tritonclient call; its exceptions become one line naming the server."""
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kwargs)
        except InferenceServerException as exc:
            raise VssegError(f"{self.address}: {first_line(exc)}") from None
        except (OSError, ConnectionError) as exc:
            raise VssegError(f"{self.address}: {type(exc).__name__}: {exc}") from None

    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_server_ready()) and bool(self._client.is_model_ready(self.model))
        except Exception:
            return False

    def request(self, array: np.ndarray, dtype: str = "UINT8", name: str = INPUT, **kwargs):
        """Send `array` as input `name` with Triton datatype `dtype`; return the labels."""
        inp = self._tc.InferInput(name, list(array.shape), dtype)
        inp.set_data_from_numpy(array, **({"binary_data": True} if self.protocol == "http" else {}))
        out = self._tc.InferRequestedOutput(OUTPUT, **({"binary_data": True} if self.protocol == "http" else {}))
        result = self.call(self._client.infer, self.model, [inp], outputs=[out], **kwargs)
        return result.as_numpy(OUTPUT)

    def labels(self, frames: np.ndarray) -> np.ndarray:
        return self.request(np.ascontiguousarray(frames))

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:
            pass


def first_line(exc) -> str:
    """The useful line of a Triton error: its own message, or the last line naming an exception type."""
    text = str(getattr(exc, "message", lambda: None)() or exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    named = [ln for ln in lines if "Error:" in ln or "Exception:" in ln]
    line = named[-1] if len(lines) > 1 and named else lines[0]
    return line[:300]


def wait_ready(url: str, model: str | None = None, timeout_s: float = 60.0) -> Client:
    """A Client once the server and the model answer ready (VssegError after `timeout_s`)."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            client = Client(url, model)
            if client.is_ready():
                return client
            client.close()
        except VssegError as exc:
            last = exc
        time.sleep(0.25)
    raise VssegError(f"{url}: not ready after {timeout_s:g} s{f' ({last})' if last else ''}")


def load_frames(source: str, count: int) -> list[np.ndarray]:
    """Up to `count` frames of a --source (video, folder, glob, stream …), read into memory."""
    from ..runtime.sources import open_source

    src = open_source(source)
    frames = []
    src.start()
    try:
        while len(frames) < count:
            frame = src.get(timeout=30.0)
            if frame is None:
                break
            frames.append(frame.image)
    finally:
        src.stop()
        src.join()
    if not frames:
        raise VssegError(f"--source {source}: gave no frame{f' ({src.error})' if src.error else ''}")
    return frames


# ---------------------------------------------------------------------------------------- load test ----
@dataclass
class LoadResult:
    """One load-test run: N streams for `seconds`."""

    streams: int
    seconds: float
    answered: int
    errors: int
    frames_per_s: float
    latency_ms: dict
    error_samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _percentiles(values) -> dict:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    a = np.asarray(values, np.float64)
    return {
        "p50": round(float(np.percentile(a, 50)), 2),
        "p90": round(float(np.percentile(a, 90)), 2),
        "p99": round(float(np.percentile(a, 99)), 2),
        "mean": round(float(a.mean()), 2),
        "max": round(float(a.max()), 2),
    }


def load_test(
    url: str, model: str, frames: list[np.ndarray], streams: int, seconds: float, warmup_s: float = 1.0
) -> LoadResult:
    """Closed-loop load from `streams` threads for `warmup_s` + `seconds`; only the timed window counts."""
    if streams < 1 or seconds <= 0:
        raise VssegError(f"load test: expected streams ≥ 1 and seconds > 0, got {streams}, {seconds}")
    batches = [np.ascontiguousarray(f[None]) for f in frames]
    t_begin = [0.0]
    start = threading.Barrier(streams + 1, action=lambda: t_begin.__setitem__(0, time.perf_counter()))
    lat: list[list[tuple[float, float]]] = [[] for _ in range(streams)]  # (sent, answered) per request
    errs: list[list[str]] = [[] for _ in range(streams)]
    failed_to_connect: list[str] = []

    def worker(k: int):
        try:
            client = Client(url, model)
        except VssegError as exc:
            failed_to_connect.append(str(exc))
            start.abort()
            return
        try:
            start.wait()
            i, t_end = k, t_begin[0] + warmup_s + seconds
            while True:
                t0 = time.perf_counter()
                if t0 >= t_end:
                    break
                try:
                    client.labels(batches[i % len(batches)])
                    lat[k].append((t0, time.perf_counter()))
                except VssegError as exc:
                    if t0 >= t_begin[0] + warmup_s:
                        errs[k].append(str(exc))
                    time.sleep(0.01)
                i += 1
        except threading.BrokenBarrierError:
            pass
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(streams)]
    for t in threads:
        t.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        for t in threads:
            t.join()
        raise VssegError(failed_to_connect[0] if failed_to_connect else f"{url}: load test could not start") from None
    for t in threads:
        t.join()
    t_from, t_to = t_begin[0] + warmup_s, t_begin[0] + warmup_s + seconds
    # throughput: answers that arrived inside the timed window; latency: every request sent inside it
    answered = sum(t_from <= t1 <= t_to for per in lat for _, t1 in per)
    latencies = [(t1 - t0) * 1e3 for per in lat for t0, t1 in per if t0 >= t_from]
    errors = [e for per in errs for e in per]
    return LoadResult(
        streams,
        seconds,
        answered,
        len(errors),
        round(answered / seconds, 2),
        _percentiles(latencies),
        sorted(set(errors))[:5],
    )


# ---------------------------------------------------------------------------------------- robustness ----
def _half_http_request(address: str, model: str) -> str:
    """Announce a 1 MB JSON body, send 1 kB of it and hang up."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {1 << 20}\r\n\r\n"
        )
        sock.sendall(
            head.encode() + b'{"inputs": [{"name": "frames", "shape": [1, 64, 64, 3], "datatype": '
            b'"UINT8", "data": [' + b"0, " * 300
        )
    return "sent 1 kB of a 1 MB body, then closed the connection"


def _not_json(address: str, model: str) -> str:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        body = b"this is not json"
        sock.sendall(
            f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status = reply.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 200 " in status:
        return f"answered {status}"
    raise VssegError(f"HTTP {status.split(' ', 1)[-1]}")


def robustness_check(grpc_url: str, http_url: str, model: str, frame: np.ndarray, max_batch: int) -> list[dict]:
    """Each case: did it get an error (or, for a disconnect, nothing to get), and was a valid request answered
    right after it? The reference labels are the server's own for `frame`, asked first."""
    g, h = Client(grpc_url, model), Client(http_url, model)
    try:
        reference = g.labels(frame[None])
        bad = {
            "float32 frames": lambda: g.request(frame[None].astype(np.float32), "FP32"),
            "4 channels": lambda: g.request(np.concatenate([frame, frame[..., :1]], -1)[None]),
            "no batch dimension": lambda: g.request(frame),
            "empty frame (0 rows)": lambda: g.request(np.zeros((1, 0, frame.shape[1], 3), np.uint8)),
            f"batch of {max_batch + 1} (max {max_batch})": lambda: g.request(np.repeat(frame[None], max_batch + 1, 0)),
            "unknown input name": lambda: g.request(frame[None], name="image"),
            "HTTP body that is not JSON": lambda: _not_json(h.address, model),
            "HTTP client hangs up mid-request": lambda: _half_http_request(h.address, model),
            "gRPC call abandoned at a 1 ms deadline": lambda: g.request(
                np.repeat(frame[None], max_batch, 0), client_timeout=0.001
            ),
        }
        results = []
        for case, send in bad.items():
            try:
                outcome = send()
                outcome = outcome if isinstance(outcome, str) else "answered (no error)"
                error = False
            except VssegError as exc:
                outcome, error = str(exc).split(": ", 1)[-1], True
            served = np.array_equal(g.labels(frame[None]), reference) and h.is_ready()
            results.append(
                {"case": case, "error_response": error, "response": outcome[:240], "served_after": bool(served)}
            )
        return results
    finally:
        g.close()
        h.close()


def compare_labels(client: Client, reference_model, frames: list[np.ndarray], threads: int = 0) -> dict:
    """Server labels vs the local reference (the measurement core's per-frame path over `reference_model`)."""
    from ..measure import agreement, predict
    from ..runtime.backends import open_backend
    from ..zoo import resolve

    reference_model = resolve(reference_model)  # a zoo name → its packaged checkpoint
    kw = {"threads": threads} if str(reference_model).endswith(".onnx") else {}
    with open_backend(reference_model, **kw) as be:
        local = predict(be, frames).labels
    served = [client.labels(f[None])[0] for f in frames]
    agree = agreement(served, local)
    return {
        "reference": str(reference_model),
        "frames": len(frames),
        "identical": sum(bool(np.array_equal(a, b)) for a, b in zip(served, local)),
        "agreement_percent": round(agree.percent, 4),
    }


def environment() -> dict:
    """Where the figures were measured (the measurement core's record), with the load averages and the serving
    libraries: what a throughput figure on a shared machine must be read with."""
    from importlib.metadata import PackageNotFoundError, version

    from ..measure.machine import environment as base
    from ..measure.machine import load_average

    serving = {}
    for dist in ("nvidia-pytriton", "tritonclient"):
        try:
            serving[dist] = version(dist)
        except PackageNotFoundError:
            serving[dist] = None
    return {**base(), "load_avg": load_average(), "serving": serving}


def dumps(obj) -> str:
    return json.dumps(obj, indent=2)
