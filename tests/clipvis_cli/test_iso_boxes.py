"""clipvis.cli.iso_boxes: the top-level boxes of an MP4, whole, cut short inside a box and inside a box's header."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from clipvis.cli.iso_boxes import iso_top_level_boxes


def tiny_mp4(path: Path) -> Path:
    """Three 32x32 frames, written by PyAV (its MP4 muxer: ftyp, free, mdat, moov)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for value in (0, 120, 240):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), value, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_a_whole_mp4_s_boxes_follow_each_other_to_its_end_and_a_cut_one_ends_inside_a_box(tmp_path: Path) -> None:
    video = tiny_mp4(tmp_path / "tiny.mp4")
    data = video.read_bytes()
    boxes = list(iso_top_level_boxes(video))
    kinds = [kind for kind, _, _ in boxes]
    assert kinds[0] == b"ftyp" and b"moov" in kinds and b"mdat" in kinds
    assert boxes[0][1] == 0
    assert all(end == following for (_, _, end), (_, following, _) in zip(boxes, boxes[1:], strict=False))
    assert boxes[-1][2] == len(data)  # whole: the last box ends where the file does

    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:-10])
    assert list(iso_top_level_boxes(cut))[-1][2] == len(data) > len(data) - 10  # its last box runs past the end

    last_start = boxes[-1][1]
    cut.write_bytes(data[: last_start + 4])  # ends inside the last box's 8-byte header
    kind, offset, end = list(iso_top_level_boxes(cut))[-1]
    assert (offset, end) == (last_start, None)
