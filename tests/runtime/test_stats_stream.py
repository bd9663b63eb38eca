"""The stats collector: JSONL streamed while frames finish (renamed on close), compact per-frame figures."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from vsseg_edge.runtime.stats import FIELDS, FrameTimes, Records, StatsCollector, summarize


def make_records(n: int) -> list[dict]:
    recs = []
    for i in range(n):
        t = FrameTimes(
            i,
            100.0 + 0.04 * i,
            1.0 + i % 7,
            2.0 + i % 5,
            9.0 + i % 13,
            0.5 + i % 3,
            1.5 + i % 2,
            t_done=100.02 + 0.04 * i + 0.001 * (i % 4),
        )
        recs.append(t.record(drops=i // 10, decode_failures=i // 50))
    return recs


def test_jsonl_is_streamed_to_a_temporary_file_and_renamed_at_close(tmp_path):
    target = tmp_path / "run" / "stats.jsonl"
    stats = StatsCollector(str(target), flush_s=0.0)
    recs = make_records(3)
    for rec in recs:
        stats.add(rec)
    temps = list(target.parent.glob(".stats.jsonl.*"))
    assert not target.exists() and len(temps) == 1  # written as frames finish, not only at the end
    assert [json.loads(line) for line in temps[0].read_text().splitlines()] == recs
    stats.close()
    stats.close()  # a second close changes nothing
    assert [json.loads(line) for line in target.read_text().splitlines()] == recs
    assert list(target.parent.iterdir()) == [target]  # no temporary file left behind


def test_a_run_without_frames_leaves_an_empty_file(tmp_path):
    stats = StatsCollector(str(tmp_path / "empty.jsonl"))
    stats.close()
    assert (tmp_path / "empty.jsonl").read_text() == ""
    assert stats.summary()["frames"] == 0 and stats.summary()["fps"] is None


def test_records_read_back_as_the_dicts_that_were_added_and_summarise_the_same():
    recs = make_records(120)
    stored = Records()
    for rec in recs:
        stored.append(rec)
    assert len(stored) == 120 and list(stored) == recs
    assert stored[-1] == recs[-1] and stored[10:13] == recs[10:13]
    assert all(isinstance(stored[5][k], int) for k in ("frame", "drops", "decode_failures"))
    assert set(stored[0]) == set(FIELDS)
    summary = summarize(stored, drops=11, decode_failures=2)
    assert summary == summarize(recs, drops=11, decode_failures=2)
    assert summary["fps"] == pytest.approx(25.0, rel=0.01) and summary["infer_ms"]["p50"] == 15.0


def test_memory_per_frame_stays_small_on_a_long_run():
    recs = make_records(500)
    tracemalloc.start()
    stored = Records()
    for _ in range(40):  # 20 000 frames: ~11 min of a 30 FPS camera
        for rec in recs:
            stored.append(rec)
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(stored) == 20_000
    assert used / len(stored) < 120  # bytes a frame; a list of the record dicts takes ~500


def test_a_stats_path_that_cannot_be_written_is_refused_before_the_run(tmp_path):
    from vsseg_edge.core.errors import VssegError

    with pytest.raises(VssegError, match=r"^--stats .*: is a folder; expected a file name"):
        StatsCollector(str(tmp_path))
    (tmp_path / "plain").write_text("a file, not a folder")
    with pytest.raises(VssegError, match=r"^--stats .*plain/stats.jsonl: .*plain is a file, not a folder"):
        StatsCollector(str(tmp_path / "plain" / "stats.jsonl"))
