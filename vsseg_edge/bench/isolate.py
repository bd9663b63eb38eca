"""Timing an entry in a process of its own (`bench --isolate`).

Two runtimes timed in one process share its allocator state, thread pools and whatever the first one
loaded (torch's OpenMP runtime beside onnxruntime's, a warm cache): the second is measured in the first's
aftermath. With isolation every timing round of every entry runs in a fresh interpreter that opens only
that artifact with that backend, reads the bench frames from their files and times them with
`measure.timing`; the parent collects the figures. Rounds run entries back to back, so machine noise hits
them alike and per-round ratios against a reference pair them (`runner.add_speed_ratios`).

    python -m vsseg_edge.bench.isolate JOB_JSON      (what the parent runs; prints the latency as JSON)
"""

from __future__ import annotations

import json
import subprocess
import sys

from ..core.errors import VssegError


def job(artifact, backend: str, cfg, frame_paths: list[str]) -> dict:
    """The JSON-ready description of one timing for a child process."""
    return {
        "path": str(artifact.path),
        "options": artifact.options,
        "backend": backend,
        "threads": cfg.threads,
        "device": cfg.device,
        "runs": cfg.runs,
        "warmup": cfg.warmup,
        "frames": list(frame_paths),
    }


def time_in_child(spec: dict) -> dict:
    """Run one timing job in a fresh interpreter; its latency dict, or a one-line error naming the artifact."""
    proc = subprocess.run(
        [sys.executable, "-m", "vsseg_edge.bench.isolate", json.dumps(spec)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise VssegError(f"{spec['path']}: the timing process failed ({last[:200]})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_job(spec: dict) -> dict:
    """Open the artifact, read the frames, time them (what the child process does)."""
    from ..core.fileio import read_image
    from ..measure.timing import TimingConfig, measure_latency
    from .artifacts import Artifact
    from .runner import open_runner

    frames = [read_image(p) for p in spec["frames"]]
    runner, _ = open_runner(Artifact(spec["path"], spec["options"]), spec["backend"], spec["threads"], spec["device"])
    with runner:
        return measure_latency(runner, frames, TimingConfig(spec["runs"], spec["warmup"])).to_dict()


def main() -> None:
    print(json.dumps(run_job(json.loads(sys.argv[1]))))


if __name__ == "__main__":
    main()
