"""VideoProbe (clipvis.cli.video_io.probe): what a probe reports, on a synthetic file."""

from __future__ import annotations

from pathlib import Path

from clipvis.cli.video_io import VideoReader


def test_probe_reports_size_rate_and_count(media: dict[str, Path]) -> None:
    probe = VideoReader(media["h264"]).probe()
    assert (probe.width, probe.height, probe.fps, probe.fps_known, probe.frame_count) == (64, 48, 25, True, 12)
    assert probe.codec == "h264" and probe.rotation == 0
    assert probe.processed_frame_count(stride=5) == 3
    assert probe.processed_frame_count(stride=1, max_frames=4) == 4
