"""VideoReader, ImageFolderReader and open_reader (clipvis.cli.video_io.readers): frames, sampling, the errors they
say, image folders' order and size, on synthetic files."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from clipvis.cli.inputs import discover_inputs
from clipvis.cli.video_io import ImageFolderReader, VideoReader, VideoReadError, open_reader

from .conftest import read_all


def test_h264_frames_in_order_rgb_uint8(media: dict[str, Path], synth) -> None:
    indices, frames = read_all(VideoReader(media["h264"]))
    assert indices == list(range(12))
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 and f.flags.c_contiguous for f in frames)
    assert [synth.bar_index(f) for f in frames] == list(range(12))


def test_stride_and_max_frames_pick_the_right_frames(media: dict[str, Path], synth) -> None:
    indices, frames = read_all(VideoReader(media["h264"], stride=3))
    assert indices == [0, 3, 6, 9]
    assert [synth.bar_index(f) for f in frames] == [0, 3, 6, 9]
    indices, _ = read_all(VideoReader(media["h264"], stride=2, max_frames=4))
    assert indices == [0, 2, 4, 6]
    indices, _ = read_all(VideoReader(media["h264"], max_frames=100))
    assert len(indices) == 12


def test_listed_frames_are_read_alone(media: dict[str, Path], synth) -> None:
    """The frames a corrected GT lists (one deleted by hand: no regular stride), for evaluate."""
    indices, frames = read_all(VideoReader(media["h264"], frames=[0, 1, 3, 7]))
    assert indices == [0, 1, 3, 7] and [synth.bar_index(f) for f in frames] == [0, 1, 3, 7]
    assert read_all(VideoReader(media["h264"], frames=[10, 11, 40]))[0] == [10, 11]  # the video ends first
    for bad in ([], [3, 1], [2, 2], [-1, 0]):
        with pytest.raises(ValueError, match="frames must be increasing frame indices"):
            VideoReader(media["h264"], frames=bad)


def test_reader_can_be_iterated_twice(media: dict[str, Path]) -> None:
    reader = VideoReader(media["h264"], stride=5)
    assert read_all(reader)[0] == read_all(reader)[0] == [0, 5, 10]


@pytest.mark.parametrize("key, count", [("odd_mpeg4", 5), ("odd_vp9", 3)])
def test_odd_sizes_and_other_codecs(media: dict[str, Path], key: str, count: int) -> None:
    reader = VideoReader(media[key])
    probe = reader.probe()
    assert (probe.width, probe.height) == (97, 61)
    indices, frames = read_all(reader)
    assert indices == list(range(count))
    assert {f.shape for f in frames} == {(61, 97, 3)}


def test_one_frame_and_tiny_videos(media: dict[str, Path]) -> None:
    assert read_all(VideoReader(media["one"]))[0] == [0]
    assert VideoReader(media["one"]).probe().frame_count == 1
    indices, frames = read_all(VideoReader(media["tiny"]))
    assert indices == [0, 1, 2] and frames[0].shape == (2, 2, 3)


def test_variable_frame_rate_reads_every_frame(media: dict[str, Path], synth) -> None:
    reader = VideoReader(media["vfr"])
    indices, frames = read_all(reader)
    assert indices == list(range(6)) and [synth.bar_index(f) for f in frames] == list(range(6))
    probe = reader.probe()
    assert probe.fps_known and 1 < probe.fps < 1000


@pytest.mark.parametrize(
    "key, expected",
    [
        ("zero", "zero bytes"),
        ("text", "not a video or corrupt"),
        ("audio", "no video stream (audio only)"),
        ("truncated_plain", "truncated: the file ends at byte "),  # its index at the end: FFmpeg finds none
        ("zeroed_data", "no decodable frames"),
    ],
)
def test_unreadable_files_fail_with_one_line_naming_the_file(
    media: dict[str, Path], key: str, expected: str
) -> None:
    for action in (lambda r: r.probe(), lambda r: list(r)):
        with pytest.raises(VideoReadError) as caught:
            action(VideoReader(media[key]))
        message = str(caught.value)
        assert message.startswith(str(media[key])) and expected in message and "\n" not in message


def test_missing_file_and_directory(media: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(VideoReadError, match="no such file"):
        VideoReader(tmp_path / "missing.mp4").probe()
    with pytest.raises(VideoReadError, match="is a directory"):
        list(VideoReader(tmp_path))


def test_truncated_file_fails_after_the_decodable_frames(media: dict[str, Path]) -> None:
    reader = VideoReader(media["truncated_faststart"])
    assert reader.probe().frame_count == 120  # the header still promises every frame
    received = []
    with pytest.raises(VideoReadError) as caught:
        for index, _ in reader:
            received.append(index)
    message = str(caught.value)
    assert "truncated or corrupt" in message and f"after {len(received)} frames" in message
    assert 0 < len(received) < 120


def test_truncated_file_within_max_frames_is_fine(media: dict[str, Path]) -> None:
    indices, _ = read_all(VideoReader(media["truncated_faststart"], max_frames=5))
    assert indices == [0, 1, 2, 3, 4]


def test_copy_of_video_with_other_extension_is_still_read(media: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "clip.bin"
    shutil.copy(media["h264"], copy)
    assert len(list(VideoReader(copy))) == 12
    named_like_an_image = tmp_path / "clip.jpg"  # named explicitly, "the decoder decides" (it was "not an image")
    shutil.copy(media["h264"], named_like_an_image)
    [source] = discover_inputs([str(named_like_an_image)])
    assert len(read_all(open_reader(source))[0]) == 12


def test_image_folder_reader_natural_order(tmp_path: Path, synth) -> None:
    # frames encode 0, 1, 2 in natural order
    synth.write_images(tmp_path / "seq", ["1.png", "2.png", "10.png"])
    [source] = discover_inputs([str(tmp_path / "seq")])
    reader = open_reader(source)
    assert isinstance(reader, ImageFolderReader)
    indices, frames = read_all(reader)
    assert indices == [0, 1, 2] and [synth.bar_index(f) for f in frames] == [0, 1, 2]
    probe = reader.probe()
    assert (probe.width, probe.height, probe.fps, probe.frame_count) == (40, 24, 30, 3)
    assert reader.frame_file_names("seq", indices) == ["seq/1.png", "seq/2.png", "seq/10.png"]
    indices, frames = read_all(open_reader(source, stride=2))
    assert indices == [0, 2] and synth.bar_index(frames[1]) == 2
    assert open_reader(source, image_fps=12.5).probe().fps == Fraction(25, 2)


def test_an_image_of_another_size_in_a_folder_is_resized_as_a_video_s_frames_are(tmp_path: Path, synth) -> None:
    """An image folder with one picture of another size (a phone photo its EXIF orientation turns upright among
    landscape frames) failed ("frame 2.png is 40x30 but the first frame is 40x24") where a video that changes size
    runs on at its first frame's size: the image is resized to it, and `size_change` names the first such frame."""
    from PIL import Image

    synth.write_images(tmp_path / "seq", ["1.png", "2.png"], height=24, width=40)
    synth.write_images(tmp_path / "seq", ["3.png"], height=30, width=40)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x24, shown 24x40
    Image.fromarray(synth.bar_frame(3, 24, 40)).save(tmp_path / "seq" / "4.jpg", exif=exif)
    [source] = discover_inputs([str(tmp_path / "seq")])
    reader = open_reader(source)
    frames = [frame for _, frame in reader]
    assert [frame.shape for frame in frames] == [(24, 40, 3)] * 4
    assert reader.size_change == (2, (30, 40))
    strided = open_reader(source, stride=3)
    assert len(list(strided)) == 2 and strided.size_change == (3, (40, 24))  # the turned photo: 24 wide, 40 high


def test_an_odd_first_image_is_resized_to_the_folder_s_common_size_not_the_others_to_it(tmp_path: Path, synth) -> None:
    """A phone photo its EXIF orientation turns upright (shown 24 wide, 40 high), first in a folder of 40x24 frames:
    every other frame was resized to the photo's size, all of them distorted. The size most images have wins: only
    the photo is resized, the others come as decoded, and `size_change` names the photo."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x24, shown 24x40
    (tmp_path / "seq").mkdir()
    Image.fromarray(synth.bar_frame(0, 24, 40)).save(tmp_path / "seq" / "0.jpg", exif=exif)
    files = synth.write_images(tmp_path / "seq", ["1.png", "2.png", "3.png"], height=24, width=40)
    [source] = discover_inputs([str(tmp_path / "seq")])
    reader = open_reader(source)
    probe = reader.probe()
    assert (probe.width, probe.height) == (40, 24)
    frames = [frame for _, frame in reader]
    assert [frame.shape for frame in frames] == [(24, 40, 3)] * 4
    for frame, file in zip(frames[1:], files, strict=True):
        assert np.array_equal(frame, np.asarray(Image.open(file).convert("RGB")))  # untouched
    assert reader.size_change == (0, (40, 24))
    assert reader.picture(1).shape == (24, 40, 3) and reader.picture(0).shape == (24, 40, 3)


def test_image_sizes_that_tie_go_to_the_first_image_s(tmp_path: Path, synth) -> None:
    """Two images of each size: the first image's size is kept, as before, and the images read decide (a stride's)."""
    synth.write_images(tmp_path / "seq", ["1.png", "3.png"], height=30, width=40)
    synth.write_images(tmp_path / "seq", ["2.png", "4.png"], height=24, width=40)
    [source] = discover_inputs([str(tmp_path / "seq")])
    reader = open_reader(source)
    assert [frame.shape for _, frame in reader] == [(30, 40, 3)] * 4 and reader.size_change == (1, (24, 40))
    synth.write_images(tmp_path / "seq", ["5.png"], height=24, width=40)
    [source] = discover_inputs([str(tmp_path / "seq")])
    reader = open_reader(source)
    assert [frame.shape for _, frame in reader] == [(24, 40, 3)] * 5 and reader.size_change == (0, (30, 40))
    strided = open_reader(source, stride=2)  # 1.png, 3.png (30 high) and 5.png: the images it reads decide
    assert [frame.shape for _, frame in strided] == [(30, 40, 3)] * 3 and strided.size_change == (4, (24, 40))


def test_image_folder_with_corrupt_image_fails_clearly(tmp_path: Path, synth) -> None:
    synth.write_images(tmp_path / "seq", ["1.jpg"])
    (tmp_path / "seq" / "2.jpg").write_text("not an image")
    [source] = discover_inputs([str(tmp_path / "seq")])
    with pytest.raises(VideoReadError, match=r"frame 2.jpg: not an image or corrupt"):
        list(open_reader(source))


def test_open_reader_refuses_failed_sources(tmp_path: Path) -> None:
    [source] = discover_inputs([str(tmp_path / "missing.mp4")])
    with pytest.raises(VideoReadError, match="no such file"):
        open_reader(source)


def test_a_broken_link_frame_fails_its_video_naming_the_link(tmp_path: Path, synth) -> None:
    synth.write_images(tmp_path / "seq", ["1.jpg", "2.jpg"])
    (tmp_path / "seq" / "3.jpg").symlink_to(tmp_path / "gone.jpg")
    [source] = discover_inputs([str(tmp_path / "seq")])
    with pytest.raises(VideoReadError, match=r"frame 3.jpg: a symbolic link to .*gone.jpg, which does not exist"):
        list(open_reader(source))


def test_a_gif_without_extension_blocks_gives_every_frame(tmp_path: Path) -> None:
    """FFmpeg's GIF demuxer starts a frame only after an extension block: the pictures of a GIF without any (Pillow's
    save_all without a duration or a loop count) came as one frame, the first, and segment said "1 frames" with no
    warning. Such a GIF is read through Pillow, its frames as FFmpeg reads the same pictures behind a loop count
    (which it splits), 100 ms each as FFmpeg times GIF frames without a delay; that GIF stays with FFmpeg."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(4)]
    plain, looped = tmp_path / "plain.gif", tmp_path / "looped.gif"
    pictures[0].save(plain, save_all=True, append_images=pictures[1:])
    pictures[0].save(looped, save_all=True, append_images=pictures[1:], loop=0)
    reference = open_reader(discover_inputs([str(looped)])[0])
    assert isinstance(reference, VideoReader)  # as read before
    expected = read_all(reference)[1]
    assert len({frame.tobytes() for frame in expected}) == 4
    [source] = discover_inputs([str(plain)])
    reader = open_reader(source)
    indices, decoded = read_all(reader)
    assert indices == [0, 1, 2, 3] and all(np.array_equal(a, b) for a, b in zip(decoded, expected, strict=True))
    assert list(reader.frame_times) == pytest.approx([0.0, 0.1, 0.2, 0.3]) and reader.end_time == pytest.approx(0.4)
    assert (reader.probe().frame_count, reader.probe().fps) == (4, 10)
    assert read_all(open_reader(source, stride=2, max_frames=1))[0] == [0]


def test_a_gif_read_through_pillow_is_drawn_and_timed_as_ffmpeg_reads_it(tmp_path: Path) -> None:
    """A GIF read through Pillow (one whose frames FFmpeg joins; one named .png) showed its transparent pixels in
    the palette's colour for them, where FFmpeg, which reads other GIFs, gives white; and frames with a delay of 0
    took 30 frames/s, where FFmpeg gives them 100 ms. The same GIF named .gif and .png reads the same now."""
    from PIL import Image

    canvas = np.zeros((24, 32, 3), np.uint8)
    canvas[:, :, 2] = 200
    pictures = []
    for k in range(4):
        picture = canvas.copy()
        picture[4:12, 3 + 6 * k : 9 + 6 * k] = (255, 0, 0)
        pictures.append(Image.fromarray(picture).convert("P", palette=Image.Palette.ADAPTIVE, colors=4))
    gif = tmp_path / "moving.gif"
    pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=[0, 30, 100, 250], loop=0,
                     transparency=0, disposal=2)
    named_png = tmp_path / "moving.png"
    shutil.copyfile(gif, named_png)
    by_ffmpeg = open_reader(discover_inputs([str(gif)])[0])
    by_pillow = open_reader(discover_inputs([str(named_png)])[0])
    assert isinstance(by_ffmpeg, VideoReader) and isinstance(by_pillow, ImageFolderReader)
    expected, decoded = read_all(by_ffmpeg)[1], read_all(by_pillow)[1]
    assert any((frame == 255).all(-1).any() for frame in expected)  # transparent pixels, white
    assert all(np.array_equal(a, b) for a, b in zip(decoded, expected, strict=True))
    assert list(by_pillow.frame_times) == pytest.approx(list(by_ffmpeg.frame_times)) == [0.0, 0.1, 0.13, 0.23]
    assert by_pillow.end_time == pytest.approx(by_ffmpeg.end_time) == pytest.approx(0.48)


def test_a_gif_ffmpeg_joins_reads_the_frames_a_list_names_and_its_errors_name_the_file(tmp_path: Path) -> None:
    """Such a GIF read through Pillow: a frame list (evaluate's GT frames that are no regular stride) went to FFmpeg,
    which gave the joined pictures under other frame numbers without a word (frame 1 was picture 2); and a picture it
    could not decode was said of the GIF's folder, counted from 1 (review 270). The list's frames are read now, and
    the error names the file and the frame from 0."""
    from PIL import Image

    rng = np.random.default_rng(1)
    pictures = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(5)]
    plain, looped = tmp_path / "plain.gif", tmp_path / "looped.gif"
    pictures[0].save(plain, save_all=True, append_images=pictures[1:])
    pictures[0].save(looped, save_all=True, append_images=pictures[1:], loop=0)
    every = read_all(open_reader(discover_inputs([str(looped)])[0]))[1]
    reader = open_reader(discover_inputs([str(plain)])[0], frames=[0, 1, 3])
    indices, decoded = read_all(reader)
    assert indices == [0, 1, 3] and all(np.array_equal(a, every[i]) for a, i in zip(decoded, indices, strict=True))
    assert list(reader.frame_times) == pytest.approx([0.0, 0.1, 0.3])
    cut = tmp_path / "folder" / "cut.gif"
    cut.parent.mkdir()
    cut.write_bytes(plain.read_bytes()[:-60])
    with pytest.raises(VideoReadError, match=r"cut\.gif: animation frame 4: not decodable"):
        read_all(open_reader(discover_inputs([str(cut)])[0]))
