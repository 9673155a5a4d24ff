"""`clipvis.cli.exporters.video_tools`: Label Studio's frame numbers for a video's frame times, which sources it is
warned about and the ffmpeg line that re-encodes them, from Python (the export command's tests:
commands/test_export.py)."""

from __future__ import annotations

import json
import shlex
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from clipvis.cli.exporters.video_tools import label_studio_frame_numbers, label_studio_source_warning, reencode_hint
from clipvis.cli.video_io import VideoReader


def test_label_studio_numbers_a_variable_rate_video_s_frames_by_the_picture_it_shows() -> None:
    """Frames closer together than Label Studio's frames took the next numbers, so every later box sat on another
    picture, and the last ones past the video's end (20 frames crowded at the end of a 1.139 s video at 17.2 frames/s:
    frames 21-23 of a video with 20; 10 of 20 boxes on the wrong picture)."""
    fps = 20 / 1.162
    times = [0.0, 0.058, 0.116, 0.175, 0.232, 0.29, 0.349, 0.406, 0.465, 0.523, 0.581, 0.639, 0.697, 0.755,
             0.813, 0.871, 1.062, 1.095, 1.128, 1.138]
    numbers = label_studio_frame_numbers(times, fps)
    for position, number in enumerate(numbers):
        if number is None:  # the next frame's picture is up by the time Label Studio's next frame comes
            following = numbers[position + 1]
            assert following is not None and times[position + 1] <= (following - 1) / fps + 0.1 / fps
            continue
        shown_at = (number - 1) / fps
        assert times[position] - 0.1 / fps <= shown_at  # at or after its time (a tenth of a frame's rounding)
        assert position + 1 == len(times) or shown_at < times[position + 1] - 0.1 / fps  # before the next one's
    assert numbers[:16] == list(range(1, 17)) and numbers[16:] == [None, 20, None, 21]
    assert label_studio_frame_numbers([0.0, 0.033, 0.067, 0.1, 0.133], 30.0) == [1, 2, 3, 4, 5]  # ms time base


def _write_tiny_video(path: Path, codec: str) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for index in range(3):
            image = np.full((64, 64, 3), 40 * index, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.mark.skipif("libsvtav1" not in av.codecs_available, reason="this FFmpeg has no AV1 encoder (libsvtav1)")
def test_an_av1_mp4_is_probed_as_av1_and_label_studio_takes_it_without_a_warning(tmp_path) -> None:
    """Every AV1 video was probed as `libdav1d` (the decoder's name, not the codec's), so Label Studio exports warned
    that browsers may not play it and told to re-encode it, though MP4 with AV1 is one of the videos they play."""
    source = _write_tiny_video(tmp_path / "clip.mp4", "libsvtav1")
    probe = VideoReader(source).probe()
    assert probe.codec == "av1"
    assert label_studio_source_warning(source, probe) is None
    matroska = _write_tiny_video(tmp_path / "clip.mkv", "libsvtav1")
    warning = label_studio_source_warning(matroska, VideoReader(matroska).probe())
    assert warning is not None and "(.mkv, av1)" in warning


@pytest.mark.parametrize("name", ["h264.mkv", "clip.mp4", "clip.MP4", "old clip.avi", "-dash.mov"])
def test_the_re_encode_line_writes_beside_the_source_under_a_name_no_other_video_of_it_has(tmp_path, name) -> None:
    """The suggested ffmpeg line wrote a bare `STEM.mp4` into the current folder: `h264.mkv` -> `h264.mp4`, which
    can be a different video of the user's own there (ffmpeg asks before overwriting it, a script's `-y` does not),
    and is not beside the source. It now writes `<source folder>/<stem>-h264.mp4`."""
    source = tmp_path / "videos" / name
    hint = reencode_hint(source)
    command = shlex.split(hint[hint.index("(ffmpeg") + 1 : hint.rindex(")")])
    assert command[:3] == ["ffmpeg", "-i", str(source)]
    target = Path(command[-1])
    assert target == source.parent / f"{source.stem}-h264.mp4" and target != source
    relative = reencode_hint(Path(name))
    relative_command = shlex.split(relative[relative.index("(ffmpeg") + 1 : relative.rindex(")")])
    assert not relative_command[2].startswith("-") and not relative_command[-1].startswith("-")  # no option
    assert Path(relative_command[-1]) == Path(f"{Path(name).stem}-h264.mp4")


@pytest.mark.parametrize(("prefix", "url"), [
    ("http://h/v", "http://h/v/good%20two.mp4"),  # a folder URL without its `/`: it was http://h/vgood%20two.mp4
    ("http://h/v/", "http://h/v/good%20two.mp4"),
    ("/data/local-files/?d=clips", "/data/local-files/?d=clips/good%20two.mp4"),
    ("/data/local-files/?d=clips/", "/data/local-files/?d=clips/good%20two.mp4"),
    ("/data/local-files/?d=", "/data/local-files/?d=good%20two.mp4"),  # a query value: kept as given
    ("/serve?", "/serve?good%20two.mp4"),
    ("/serve?a=1&", "/serve?a=1&good%20two.mp4"),
    ("", "good%20two.mp4"),
])
def test_a_media_url_prefix_is_a_folder_unless_it_ends_a_query(prefix, url) -> None:
    from clipvis.cli.exporters.video_tools import media_url, media_url_prefix

    assert media_url(prefix, "good two.mp4") == url
    assert media_url_prefix(media_url_prefix(prefix)) == media_url_prefix(prefix)


def test_the_re_encode_line_pads_an_odd_frame_size_to_one_x264_encodes(tmp_path) -> None:
    """`ffmpeg -i odd.mkv -c:v libx264 -pix_fmt yuv420p ...` fails for a 33x25 video (4:2:0 needs even sides): the
    line now pads it to even sides first (`-vf pad=...`, one shell word), which changes nothing for even sizes."""
    hint = reencode_hint(tmp_path / "odd clip.mkv")
    command = shlex.split(hint[hint.index("(ffmpeg") + 1 : hint.rindex(")")])
    pad = command[command.index("-vf") + 1]
    assert command.index("-vf") < command.index("-c:v") and pad.startswith("pad=")
    for width, height in ((33, 25), (64, 48)):  # the filter as ffmpeg runs it (PyAV's libavfilter)
        graph = av.filter.Graph()
        frame = av.VideoFrame(width, height, "yuv444p")
        source = graph.add_buffer(width=width, height=height, format="yuv444p", time_base=Fraction(1, 10))
        padding = graph.add("pad", pad.removeprefix("pad="))
        sink = graph.add("buffersink")
        source.link_to(padding)
        padding.link_to(sink)
        graph.configure()
        graph.push(frame)
        padded = graph.pull()
        assert (padded.width, padded.height) == (width + width % 2, height + height % 2)


def test_an_h264_mp4_browsers_do_not_decode_gets_the_re_encode_warning(tmp_path) -> None:
    """H.264 in MP4 passed as browser video whatever its pixel format: High 4:4:4 (yuv444p) or High 10
    (yuv420p10le), which common browsers do not play, exported to Label Studio without a word."""
    full_chroma = tmp_path / "full.mp4"
    with av.open(str(full_chroma), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv444p"
        for index in range(3):
            image = np.full((64, 64, 3), 40 * index, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    warning = label_studio_source_warning(full_chroma, VideoReader(full_chroma).probe())
    assert warning is not None and "(.mp4, h264 yuv444p) is not a video every browser plays" in warning
    assert "-pix_fmt yuv420p" in warning
    plain = _write_tiny_video(tmp_path / "plain.mp4", "libx264")  # yuv420p: plays
    assert label_studio_source_warning(plain, VideoReader(plain).probe()) is None


def test_fiftyone_names_its_files_within_the_file_systems_255_bytes(tmp_path) -> None:
    """A video whose output folder name is near 255 bytes (`<long name>-2`, the second video of that name) failed
    its fiftyone export: `data/<folder name>.webm` passed the limit on a name ("File name too long"). The files
    are named after the folder name cut short (whole characters) so that each fits."""
    from dataclasses import replace

    from clipvis.cli.exporters import ExportOptions, ExportVideo
    from clipvis.cli.exporters.video_tools import FiftyOneExporter

    from .conftest import CATEGORIES, make_segment_output

    output = make_segment_output(tmp_path / "out")
    stem = "日" * 84 + "-2"  # 254 bytes, as segment names such a folder
    video = ExportVideo(replace(output.info, stem=stem), output.tracks, CATEGORIES, output.ytvis,
                        category_ids=[1, 2, 3])
    staging = tmp_path / "staging"
    staging.mkdir()
    (root,) = FiftyOneExporter().export(video, staging, ExportOptions())
    names = [path.name for path in root.rglob("*")]
    assert all(len(name.encode()) <= 255 for name in names)
    manifest = json.loads((root / "manifest.json").read_text())
    data, labels = manifest["index"][0]["data"], manifest["index"][0]["labels"]
    assert (root / data).is_file() and (root / labels).is_file() and data.startswith("data/日日")
    assert json.loads((root / labels).read_text())["filename"] == data.removeprefix("data/")


def test_a_long_source_name_gives_a_re_encode_target_and_a_media_name_a_file_system_takes(tmp_path) -> None:
    """Review: the ffmpeg line's `<stem>-h264.mp4` of a 250-byte name, and Label Studio's media/ name of a long name
    whose bytes that are not UTF-8 became `_xNN` (4 bytes each), passed the 255 bytes a file name takes ("File name
    too long"); both are cut short (whole characters), their endings kept."""
    import os

    from clipvis.cli.exporters.video_tools import label_studio_media_name

    source = tmp_path / ("é" * 123 + "v.mkv")  # 247 bytes of stem
    hint = reencode_hint(source)
    target = Path(shlex.split(hint[hint.index("(ffmpeg") + 1 : hint.rindex(")")])[-1])
    assert target.parent == tmp_path and target.name.endswith("-h264.mp4") and target.name.startswith("é" * 100)
    assert len(os.fsencode(target.name)) <= 255
    media = label_studio_media_name(tmp_path / os.fsdecode(b"v" * 230 + b"\xe9" * 20 + b".mp4"))
    assert media.startswith("v" * 230 + "_xe9") and media.endswith(".mp4") and len(media.encode()) <= 255
    assert label_studio_media_name(Path("caf\\e.mp4")) == "caf_e.mp4"  # as before for a name that fits
