"""Outputs: H.264 MP4 through PyAV, RTP and RTSP streams read back on 127.0.0.1, RTP input, mask formats and
per-frame JSON.

With `--alpha 1` the overlay is exactly the colour mask, so a decoded video or stream frame is compared with
the colour masks the same run wrote (`--mask-format color`), taken through the same yuv420p conversion (its
2x2 chroma subsampling alone changes these noisy masks visibly): the stream must carry the model's overlay,
frame by frame in order, not just some pictures.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.conftest import port_bound, wait_for
from vsseg_edge.core.errors import VssegError
from vsseg_edge.runtime.run import run_model

av = pytest.importorskip("av", reason="PyAV (the edge extra) is needed for H.264 and streaming output")


def _free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _masks(folder: Path) -> list[np.ndarray]:
    """The run's colour masks as an H.264 stream can carry them (through yuv420p and back)."""
    import cv2

    masks = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sorted(folder.glob("*.png"))]
    return [
        av.VideoFrame.from_ndarray(m, format="bgr24").reformat(format="yuv420p").to_ndarray(format="bgr24")
        for m in masks
    ]


def _matches(frames: list[np.ndarray], masks: list[np.ndarray]) -> tuple[list[int], float]:
    """For each decoded frame, the index of the nearest mask, and the largest such mean absolute difference."""
    best, worst = [], 0.0
    for f in frames:
        diffs = [float(np.abs(f.astype(np.int16) - m.astype(np.int16)).mean()) for m in masks]
        best.append(int(np.argmin(diffs)))
        worst = max(worst, min(diffs))
    return best, worst


def _top_level_boxes(path: Path) -> list[str]:
    data, boxes, pos = path.read_bytes(), [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        boxes.append(kind.decode("latin-1"))
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        if size < 8:
            break
        pos += size
    return boxes


def test_save_mp4_is_browser_playable_h264_carrying_the_overlay(onnx_model, video_file, tmp_path):
    out, masks = tmp_path / "out.mp4", tmp_path / "masks"
    result = run_model(onnx_model, source=str(video_file), save=out, save_masks=masks, mask_format="color", alpha=1.0)
    assert result.frames == 12
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(frames) == 12 and frames[0].shape == (64, 128, 3)
    boxes = _top_level_boxes(out)
    assert boxes.index("moov") < boxes.index("mdat")  # +faststart: a browser plays it while it downloads
    order, worst = _matches(frames, _masks(masks))
    assert order == list(range(12)) and worst < 8.0  # each frame nearest its own mask, and close to it
    assert not list(tmp_path.glob(".out.mp4.*"))  # no temporary file left


def test_without_pyav_mp4_falls_back_to_mp4v_and_says_so(monkeypatch, capsys, onnx_model, video_file, tmp_path):
    from vsseg_edge.runtime import av_output

    monkeypatch.setattr(av_output, "av_module", lambda: None)
    out = tmp_path / "old.mp4"
    run_model(onnx_model, source=str(video_file), save=out, max_frames=4)
    assert "writing MPEG-4 Part 2 (mp4v)" in capsys.readouterr().err
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
    with pytest.raises(VssegError, match=r"\.mkv needs PyAV; install it with: pip install 'vsseg-edge\[edge\]'"):
        run_model(onnx_model, source=str(video_file), save=tmp_path / "x.mkv")


def _receive(url_or_sdp: str, got: list, errors: list, n: int, **open_kw) -> None:
    """Decode up to `n` frames; a read timeout after some frames is the end of the stream (RTP has no end)."""
    try:
        with av.open(url_or_sdp, **open_kw) as container:
            container.streams.video[0].codec_context.thread_count = 1  # no frame-threading delay at the end
            frames = container.decode(video=0)
            try:
                for frame in frames:
                    got.append(frame.to_ndarray(format="bgr24"))
                    if len(got) >= n:
                        return
            finally:
                frames.close()  # before the container closes (a demuxer left suspended blocks until the timeout)
    except av.error.ExitError:  # the read timeout
        if not got:
            errors.append("no frame before the timeout")
    except Exception as exc:  # reported by the test
        errors.append(exc)


def test_rtp_output_is_read_back_on_loopback(onnx_model, video_file, tmp_path):
    from vsseg_edge.runtime.av_output import rtp_sdp

    port = _free_port(socket.SOCK_DGRAM)
    sdp = tmp_path / "stream.sdp"
    sdp.write_text(rtp_sdp("127.0.0.1", port))
    got, errors = [], []
    receiver = threading.Thread(
        target=_receive,
        args=(str(sdp), got, errors, 12),
        daemon=True,
        kwargs={
            "format": "sdp",
            "timeout": (20, 3),
            "options": {"protocol_whitelist": "file,udp,rtp", "reorder_queue_size": "0", "probesize": "32"},
        },
    )
    receiver.start()
    # the first packet leaves once the receiver's socket is bound (an RTP packet sent before is lost)
    wait_for(lambda: port_bound(port, "udp") or not receiver.is_alive(), what="the receiver's socket")
    assert not errors, errors
    masks = tmp_path / "masks"
    result = run_model(
        onnx_model,
        source=str(video_file),
        save=f"rtp://127.0.0.1:{port}",
        save_masks=masks,
        mask_format="color",
        alpha=1.0,
    )
    receiver.join(20)
    assert result.frames == 12 and not errors, errors
    assert len(got) >= 8, f"received {len(got)} of 12 frames"
    assert got[0].shape == (64, 128, 3)
    order, worst = _matches(got, _masks(masks))
    assert order == sorted(order) and worst < 10.0


def test_rtsp_output_publishes_to_a_server_on_loopback(onnx_model, video_file, tmp_path):
    """FFmpeg's RTSP demuxer in listen mode plays the server that accepts the publisher (as MediaMTX would)."""
    port = _free_port()
    url = f"rtsp://127.0.0.1:{port}/live"
    got, errors = [], []
    receiver = threading.Thread(
        target=_receive,
        args=(url, got, errors, 10),
        daemon=True,
        kwargs={"options": {"rtsp_flags": "listen", "listen_timeout": "20"}},
    )
    receiver.start()
    # the publisher connects once the server listens (before, its connection is refused)
    wait_for(lambda: port_bound(port, "tcp") or not receiver.is_alive(), what="the RTSP server's socket")
    assert not errors, errors
    masks = tmp_path / "masks"
    try:
        run_model(onnx_model, source=str(video_file), save=url, save_masks=masks, mask_format="color", alpha=1.0)
    except VssegError as exc:  # the test's server hangs up after 10 frames: the publisher must say so in one line
        assert str(exc).startswith(f"--save {url}: write failed") and "\n" not in str(exc)
    receiver.join(20)
    assert not errors, errors
    assert len(got) == 10 and got[0].shape == (64, 128, 3)
    order, worst = _matches(got, _masks(masks))
    assert order == list(range(10)) and worst < 10.0


def test_rtsp_output_without_a_server_fails_in_one_line(onnx_model, video_file):
    url = f"rtsp://127.0.0.1:{_free_port()}/live"
    with pytest.raises(VssegError, match=rf"^--save {url}: cannot open for writing \(.*\)$"):
        run_model(onnx_model, source=str(video_file), save=url)


@pytest.mark.parametrize(
    "url, message",
    [
        ("rtp://127.0.0.1", "expected rtp://HOST:PORT"),
        ("rtp://@:5000", "expected rtp://HOST:PORT"),
        ("rtmp://host/app", "expected a video file"),
    ],
)
def test_bad_stream_outputs_are_refused_before_the_run(onnx_model, video_file, url, message):
    with pytest.raises(VssegError, match=message):
        run_model(onnx_model, source=str(video_file), save=url)


def test_rtp_input_receives_our_own_stream(tmp_path):
    """`--source rtp://@:PORT` (jetson-utils' words) decodes an H.264 RTP stream sent to that port."""
    from vsseg_edge.runtime.av_output import StreamSink
    from vsseg_edge.runtime.sources import CapturedFrame, open_source

    port = _free_port(socket.SOCK_DGRAM)
    image = np.zeros((64, 128, 3), np.uint8)
    image[:, :64] = (0, 0, 200)
    image[:32, 64:] = (0, 255, 0)
    stop = threading.Event()

    def send():
        sink = StreamSink(f"rtp://127.0.0.1:{port}")
        try:
            i = 0
            while not stop.is_set() and i < 300:
                sink.write(CapturedFrame(i, image, time.perf_counter(), 0.0), None, image, [])
                i += 1
                time.sleep(1 / 30)
        finally:
            sink.close()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        src = open_source(f"rtp://@:{port}").start()
        frames = []
        while len(frames) < 5:
            frame = src.get(timeout=10.0)
            assert frame is not None, src.error
            frames.append(frame.image)
        src.stop()
        src.join()
    finally:
        stop.set()
        sender.join(10)
    assert frames[-1].shape == image.shape
    assert float(np.abs(frames[-1].astype(np.int16) - image).mean()) < 6.0


def test_mask_formats_ids_color_and_cityscapes_label_ids(onnx_model, image_folder, tmp_path):
    import cv2

    from vsseg_edge.core.labels import CITYSCAPES, CITYSCAPES_TRAINID_TO_ID

    for fmt in ("ids", "color", "labelids"):
        run_model(onnx_model, source=str(image_folder), save_masks=tmp_path / fmt, mask_format=fmt)
    names = sorted(p.name for p in (tmp_path / "ids").glob("*.png"))
    assert names == sorted(p.name for p in (tmp_path / "color").glob("*.png")) and len(names) == 6
    palette_bgr = np.asarray(CITYSCAPES.palette, np.uint8)[:, ::-1]
    for name in names:
        ids = cv2.imread(str(tmp_path / "ids" / name), cv2.IMREAD_UNCHANGED)
        colour = cv2.imread(str(tmp_path / "color" / name), cv2.IMREAD_COLOR)
        label_ids = cv2.imread(str(tmp_path / "labelids" / name), cv2.IMREAD_UNCHANGED)
        assert len(np.unique(ids)) > 1
        assert np.array_equal(colour, palette_bgr[ids])
        assert np.array_equal(label_ids, CITYSCAPES_TRAINID_TO_ID[ids])
    with pytest.raises(VssegError, match="--mask-format jpeg: expected one of ids, color, labelids"):
        run_model(onnx_model, source=str(image_folder), save_masks=tmp_path / "x", mask_format="jpeg")


def test_label_id_masks_are_scored_by_cityscapes_scripts_as_by_eval(onnx_model, synth_root, tmp_path):
    """cityscapesScripts reads `--mask-format labelids` directly, and its per-class IoU equals `eval`'s."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval

    from vsseg_edge.data.datasets import open_dataset
    from vsseg_edge.metrics.evaluate import PredictionDir, evaluate_predictions

    frames = f"{synth_root}/leftImg8bit_sequence/val/*/*_leftImg8bit.png"
    run_model(onnx_model, source=frames, save_masks=tmp_path / "labelids", mask_format="labelids")
    run_model(onnx_model, source=frames, save_masks=tmp_path / "ids", mask_format="ids")
    gts = sorted(str(p) for p in (synth_root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    args = cs_eval.args
    args.predictionPath, args.predictionWalk = str(tmp_path / "labelids"), None
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    preds = [cs_eval.getPrediction(args, gt) for gt in gts]
    theirs = cs_eval.evaluateImgLists(preds, gts, args)["classScores"]
    ds = open_dataset(synth_root, "val")
    ours = evaluate_predictions(PredictionDir(tmp_path / "ids", ds), ds, tc=False, progress=False)
    per_class = ours["miou_detail"]["per_class"]
    compared = [c for c, v in per_class.items() if v is not None and not np.isnan(v)]
    assert len(compared) >= 3
    for name in compared:
        assert theirs[name] == pytest.approx(per_class[name] / 100.0, abs=1e-6), name


def test_frame_json_gives_class_shares_and_timings(onnx_model, video_file, tmp_path, capsys):
    out = tmp_path / "frames.jsonl"
    run_model(onnx_model, source=str(video_file), frame_json=str(out), save_masks=tmp_path / "m")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(12))
    import cv2

    from vsseg_edge.core.labels import CITYSCAPES

    for rec, mask in zip(lines, sorted((tmp_path / "m").glob("*.png"))):
        ids = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
        counts = np.bincount(ids.ravel(), minlength=19)
        expected = {CITYSCAPES.classes[i]: round(c / ids.size, 4) for i, c in enumerate(counts) if c}
        assert rec["shares"] == expected and rec["ignored"] == 0.0
        assert list(rec["shares"].values()) == sorted(rec["shares"].values(), reverse=True)
        assert rec["infer_ms"] > 0 and rec["preprocess_ms"] >= 0 and (rec["height"], rec["width"]) == (64, 128)
    run_model(onnx_model, source=str(video_file), frame_json="-", max_frames=3)
    stdout = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["frame"] for r in stdout] == [0, 1, 2]


def test_class_file_renames_and_recolours_a_model(onnx_model, image_folder, tmp_path):
    import cv2

    from vsseg_edge.core.labels import CITYSCAPES

    names = [f"c{i}" for i in range(19)]
    (tmp_path / "mine.yaml").write_text(
        json.dumps({"classes": [{"name": n, "color": [i, 2 * i, 3 * i]} for i, n in enumerate(names)]})
    )
    run_model(
        onnx_model,
        source=str(image_folder),
        save_masks=tmp_path / "c",
        mask_format="color",
        classes=str(tmp_path / "mine.yaml"),
        frame_json=str(tmp_path / "f.jsonl"),
    )
    colour = cv2.imread(str(sorted((tmp_path / "c").glob("*.png"))[0]), cv2.IMREAD_COLOR)
    ids = colour[..., 2]  # red channel = i (RGB (i, 2i, 3i) is stored as BGR (3i, 2i, i))
    assert np.array_equal(colour[..., 1], 2 * ids) and np.array_equal(colour[..., 0], 3 * ids)
    shares = json.loads((tmp_path / "f.jsonl").read_text().splitlines()[0])["shares"]
    assert set(shares) <= set(names)
    (tmp_path / "three.yaml").write_text("[a, b, c]\n")
    with pytest.raises(VssegError, match="the model predicts 19 classes, the class file 'three' has 3"):
        run_model(onnx_model, source=str(image_folder), classes=str(tmp_path / "three.yaml"))
    with pytest.raises(VssegError, match="Cityscapes label ids need a Cityscapes model"):
        run_model(
            onnx_model,
            source=str(image_folder),
            classes=str(tmp_path / "mine.yaml"),
            save_masks=tmp_path / "l",
            mask_format="labelids",
        )
    assert CITYSCAPES.num_classes == 19


def test_a_failed_h264_write_leaves_no_file_and_a_short_file_is_refused(monkeypatch, onnx_model, video_file, tmp_path):
    """A full disk mid-run (FFmpeg's OSError) ends the run in one line with no file; the read-back check names
    a finished file that holds fewer frames than written."""
    import errno
    import os

    from vsseg_edge.runtime import av_output

    calls = {"n": 0}
    real_mux = av.container.OutputContainer.mux

    def failing_mux(self, packets):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_mux(self, packets)

    out = tmp_path / "full.mp4"
    with monkeypatch.context() as m:
        m.setattr(av.container.OutputContainer, "mux", failing_mux)
        with pytest.raises(VssegError, match=rf"^--save {out}: cannot write \(No space left on device\)$"):
            run_model(onnx_model, source=str(video_file), save=out)
    assert not out.exists() and not list(tmp_path.glob(".full.mp4.*"))
    good = tmp_path / "good.mp4"
    run_model(onnx_model, source=str(video_file), save=good, max_frames=5)
    assert av_output._video_problem(good, 5) is None
    assert av_output._video_problem(good, 6) == "the finished file holds 5 of the 6 frames written"


def test_outputs_over_a_glob_or_file_uri_source_are_refused(onnx_model, image_folder, video_file):
    """Masks named like their frames would replace the frames a glob reads; a file:// source is a file too."""
    with pytest.raises(VssegError, match=r"^--save-masks .*: is an input of this command"):
        run_model(onnx_model, source=f"{image_folder}/*.png", save_masks=image_folder)
    with pytest.raises(VssegError, match=r"^--save .*synthetic.mp4: is an input of this command"):
        run_model(onnx_model, source=f"file://{video_file}", save=f"file://{video_file}")
