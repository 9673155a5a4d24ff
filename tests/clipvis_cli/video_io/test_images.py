"""Pillow stills and animations (clipvis.cli.video_io.images): bit depths, EXIF and PNG orientation, animated images, on
synthetic files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from clipvis.cli.inputs import discover_inputs
from clipvis.cli.video_io import VideoReadError, open_reader

from .conftest import read_all


def test_sixteen_bit_gray_frames_keep_their_picture_in_segment_and_in_training(tmp_path: Path) -> None:
    """16-bit gray PNGs (depth, thermal, medical frames) were clipped to white by Pillow's RGB conversion; training
    reads frames as segment does, EXIF orientation included."""
    from PIL import Image

    from clipvis.cli.train.data import read_frame
    from clipvis.cli.train.records import FrameRecord

    ramp = (np.arange(24 * 40, dtype=np.uint16).reshape(24, 40) * 61).astype(np.uint16)  # 0 .. 58499
    folder = tmp_path / "depth"
    folder.mkdir()
    Image.fromarray(ramp).save(folder / "0.png")
    assert Image.open(folder / "0.png").mode.startswith("I")
    [source] = discover_inputs([str(folder)])
    _, [frame] = read_all(open_reader(source))
    assert frame.shape == (24, 40, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame[:, :, 0], (ramp >> 8).astype(np.uint8))
    assert np.array_equal(frame[:, :, 0], frame[:, :, 2])

    rgb = np.zeros((24, 40, 3), np.uint8)
    rgb[:, :10] = 255  # a white band on the left of the stored picture
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise: 24 wide, 40 high
    Image.fromarray(rgb).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    record = FrameRecord(path=tmp_path / "turned.jpg", height=40, width=24)
    image = read_frame(record)
    assert image.shape == (40, 24, 3) and image[:8].mean() > 200 and image[-8:].mean() < 50
    assert np.array_equal(image, read_all(open_reader(discover_inputs([str(tmp_path / "turned.jpg")])[0]))[1][0])


def test_a_damaged_exif_tag_neither_fails_the_frame_nor_loses_its_orientation_nor_warns(tmp_path: Path) -> None:
    """A phone photo (orientation 6) with one damaged EXIF tag (a string where a number belongs, a tag pointing past
    the block) failed the whole image folder with "required argument is not an integer": Pillow's exif_transpose
    writes the whole EXIF again. The orientation tag is read alone; EXIF that cannot be read leaves the frame as
    stored; Pillow's "Corrupt EXIF data" warnings (one per distinct damage, per frame) are not printed."""
    import struct
    import warnings

    from PIL import Image

    from clipvis.cli.train.data import read_frame
    from clipvis.cli.train.records import FrameRecord

    def entry(tag: int, kind: int, count: int, value: bytes) -> bytes:
        return struct.pack("<HHI", tag, kind, count) + value

    tags = [entry(0x010E, 2, 200, struct.pack("<I", 0x7000)),  # a description said to lie past the block
            entry(0x0112, 3, 1, struct.pack("<HH", 6, 0)),  # orientation 6: shown turned a quarter clockwise
            entry(0x0125, 2, 4, b"Cam\0")]  # text in a tag that holds a number
    damaged = b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, len(tags)) + b"".join(tags) + struct.pack("<I", 0)
    good = Image.Exif()
    good[0x0112] = 6
    rgb = np.zeros((24, 40, 3), np.uint8)
    rgb[:, :10] = 255  # a white band on the left of the stored picture: on top once turned
    folder = tmp_path / "frames"
    folder.mkdir()
    for name, exif in (("0.jpg", good), ("1.jpg", damaged), ("2.jpg", good)):
        Image.fromarray(rgb).save(folder / name, exif=exif, quality=95)
    Image.fromarray(rgb).save(tmp_path / "unreadable.jpg", exif=b"Exif\x00\x00II*\x00\xff\xff\x00\x00")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [source] = discover_inputs([str(folder)])
        _, frames = read_all(open_reader(source))
        assert len(frames) == 3
        for frame in frames:
            assert frame.shape == (40, 24, 3) and frame[:8].mean() > 200 and frame[-8:].mean() < 50
        assert np.array_equal(read_frame(FrameRecord(path=folder / "1.jpg", height=40, width=24)), frames[1])
        [source] = discover_inputs([str(tmp_path / "unreadable.jpg")])
        _, [frame] = read_all(open_reader(source))
        assert frame.shape == (24, 40, 3) and frame[:, :8].mean() > 200  # as stored
    assert not [str(warning.message) for warning in caught if "EXIF" in str(warning.message) or "Tag" in
                str(warning.message)]


@pytest.mark.parametrize("suffix", [".webp", ".png"])
def test_an_animated_image_is_a_video_of_its_frames(tmp_path: Path, synth, suffix: str) -> None:
    """Animated WebP and APNG (FFmpeg reads only their first frame) were one-frame videos, silently."""
    from PIL import Image

    frames = [Image.fromarray(synth.bar_frame(i, 24, 40)) for i in range(5)]
    path = tmp_path / f"sticker{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    [source] = discover_inputs([str(path)])
    reader = open_reader(source, stride=2)
    indices, decoded = read_all(reader)
    assert indices == [0, 2, 4] and [synth.bar_index(f) for f in decoded] == [0, 2, 4]
    assert reader.probe().frame_count == 5 and reader.frame_file_names("s", [0, 2]) == ["s/00000.jpg", "s/00002.jpg"]
    assert reader.probe().fps == 10 and list(reader.frame_times) == pytest.approx([0.0, 0.2, 0.4])
    # frames shown for different times (Pillow gives WebP's no duration: read from its ANMF chunks)
    varied = tmp_path / f"varied{suffix}"
    frames[0].save(varied, save_all=True, append_images=frames[1:], duration=[100, 100, 500, 100, 200],
                   loop=0, lossless=True)
    [source] = discover_inputs([str(varied)])
    reader = open_reader(source)
    read_all(reader)
    assert list(reader.frame_times) == pytest.approx([0.0, 0.1, 0.2, 0.7, 0.8])
    assert reader.probe().fps == Fraction(50, 10)  # 5 frames in 1.0 s
    # animations in a folder of frames: their first frames alone made a video, silently
    folder = tmp_path / "stickers"
    folder.mkdir()
    path.rename(folder / path.name)
    varied.rename(folder / varied.name)
    [source] = discover_inputs([str(folder)])
    with pytest.raises(VideoReadError, match=r"is an animation \(5 frames\): give animated images one at a time"):
        read_all(open_reader(source))


@pytest.mark.parametrize("suffix", [".webp", ".png"])
def test_an_animated_image_ends_when_its_last_frame_does(tmp_path: Path, suffix: str) -> None:
    """Animated WebP and APNG had no end time (a GIF's is its last frame's own delay), so their overlay's last frame
    lasted an average frame (1.6 s of delays 1, 2, 0.5, 3 s: 5.1 s of 6.5). The end is the last frame's; with
    --max-frames, the last frame read's; with a stride, the animation's (the frames skipped show it)."""
    from PIL import Image

    pictures = [Image.new("RGB", (8, 8), (60 * k, 0, 0)) for k in range(4)]
    path = tmp_path / f"slides{suffix}"
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=[1000, 2000, 500, 3000], loop=0,
                     lossless=True)
    [source] = discover_inputs([str(path)])
    for options, times, end in (({}, [0, 1, 3, 3.5], 6.5), ({"max_frames": 2}, [0, 1], 3.0),
                                ({"stride": 3}, [0, 3.5], 6.5), ({"stride": 2}, [0, 3], 6.5)):
        reader = open_reader(source, **options)
        read_all(reader)
        assert (list(reader.frame_times), reader.end_time) == (pytest.approx(times), pytest.approx(end)), options


def test_an_animated_webp_named_gif_is_a_video_of_its_frames(tmp_path: Path, synth) -> None:
    """GIF sites serve animated WebP under a .gif name: FFmpeg, which reads .gif files, decodes no animated WebP
    ("no decodable frames"), where the same bytes named .webp were read through Pillow. The content decides."""
    from PIL import Image

    frames = [Image.fromarray(synth.bar_frame(i, 24, 40)) for i in range(4)]
    path = tmp_path / "reaction.gif"
    frames[0].save(path, format="WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    [source] = discover_inputs([str(path)])
    reader = open_reader(source)
    indices, decoded = read_all(reader)
    assert indices == [0, 1, 2, 3] and [synth.bar_index(f) for f in decoded] == [0, 1, 2, 3]
    assert reader.probe().fps == 10


def test_sizing_a_png_folder_decodes_no_picture(tmp_path: Path, synth, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder's common size is read from headers: Pillow's getexif of a PNG without an eXIf chunk before its
    pixels decoded each whole picture (review29: 25 ms per 1080p frame, every image of an ffmpeg PNG folder before the
    first frame ran). A PNG whose eXIf chunk comes first is still turned upright."""
    from PIL import Image, PngImagePlugin

    synth.write_images(tmp_path / "seq", ["1.png", "2.png", "3.png"], height=24, width=40)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x24, shown 24x40
    Image.fromarray(synth.bar_frame(0, 24, 40)).save(tmp_path / "seq" / "4.png", exif=exif)  # eXIf before IDAT
    decoded: list[str] = []
    load = PngImagePlugin.PngImageFile.load

    def counted_load(image: PngImagePlugin.PngImageFile) -> object:
        decoded.append(image.filename)
        return load(image)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", counted_load)
    [source] = discover_inputs([str(tmp_path / "seq")])
    reader = open_reader(source)
    probe = reader.probe()
    assert (probe.width, probe.height) == (40, 24) and decoded == []
    assert [frame.shape for _, frame in reader] == [(24, 40, 3)] * 4
    assert reader.size_change == (3, (40, 24))  # 4.png, shown 24x40, is the odd one


def png_with_chunk_after_pixels(path: Path, kind: bytes, data: bytes) -> Path:
    """Insert the chunk ``kind`` holding ``data`` just before ``path``'s IEND chunk (behind its pixel data)."""
    import struct
    import zlib

    whole = path.read_bytes()
    assert whole[-12:-8] == struct.pack(">I", 0) and whole[-8:-4] == b"IEND"
    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(whole[:-12] + chunk + whole[-12:])
    return path


def png_decodes_counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the PNG files decoded from now on (Pillow's PNG `load`), in order."""
    from PIL import PngImagePlugin

    decoded: list[str] = []
    load = PngImagePlugin.PngImageFile.load

    def counted_load(image: PngImagePlugin.PngImageFile) -> object:
        decoded.append(Path(image.filename).name)
        return load(image)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", counted_load)
    return decoded


def test_pngs_whose_exif_follows_their_pixels_are_sized_as_they_are_decoded(
    tmp_path: Path, synth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PNG whose eXIf chunk comes after its pixel data (IDAT) was sized from its header as stored, while decoding
    turns it upright (Pillow reads the chunks behind the pixels as it decodes): a folder of such photos took the
    stored size for the folder's, and every frame, turned upright, was squeezed back into it. The chunks behind the
    pixels are walked for its size; a PNG with none of the orientation's chunks there (a text comment) is still sized
    without decoding it."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x24, shown 24x40
    (tmp_path / "seq").mkdir()
    for name in ("1.png", "2.png", "4.png"):
        Image.fromarray(synth.bar_frame(0, 24, 40)).save(tmp_path / "seq" / name)
        png_with_chunk_after_pixels(tmp_path / "seq" / name, b"eXIf", exif.tobytes())
    synth.write_images(tmp_path / "seq", ["3.png"], height=24, width=40)
    png_with_chunk_after_pixels(tmp_path / "seq" / "3.png", b"tEXt", b"Comment\x00made by hand")
    with Image.open(tmp_path / "seq" / "1.png") as late:
        assert "exif" not in late.info and late.size == (40, 24)  # as the header says
    decoded = png_decodes_counted(monkeypatch)
    [source] = discover_inputs([str(tmp_path / "seq")])
    reader = open_reader(source)
    probe = reader.probe()
    assert (probe.width, probe.height) == (24, 40)
    assert sorted(decoded) == ["1.png", "2.png", "4.png"]  # 3.png sized from its header
    assert [frame.shape for _, frame in reader] == [(40, 24, 3)] * 4
    assert reader.size_change == (2, (24, 40))  # 3.png, with no orientation, is the odd one


def test_pngs_whose_orientation_is_in_a_text_chunk_before_their_pixels_are_sized_as_decoded(
    tmp_path: Path, synth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PNG whose orientation is in an XMP text chunk (tiff:Orientation) or ImageMagick's "Raw profile type exif"
    before its pixels was sized as stored (only an eXIf chunk there was looked at), while decoding turns it upright:
    a folder of them took the stored size and squeezed every frame back into it. Its size is now the decoded one,
    read without decoding it; XMP does not override an EXIF orientation, as in Pillow."""
    from PIL import Image, ImageOps, PngImagePlugin

    from clipvis.cli.video_io.images import shown_size

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x24, shown 24x40
    raw = f"\nexif\n{len(exif.tobytes()):8d}\n{exif.tobytes().hex()}\n"
    xmp = '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description tiff:Orientation="{}"/></rdf:RDF></x:xmpmeta>'
    upright_exif = Image.Exif()
    upright_exif[0x0112] = 1
    upright_raw = f"\nexif\n{len(upright_exif.tobytes()):8d}\n{upright_exif.tobytes().hex()}\n"
    (tmp_path / "seq").mkdir()
    chunks = {"1.png": [("zTXt", "Raw profile type exif", raw)],
              "2.png": [("iTXt", "XML:com.adobe.xmp", xmp.format(6))],
              "3.png": [("tEXt", "XML:com.adobe.xmp", xmp.format(8))],
              "4.png": [("tEXt", "Raw profile type exif", upright_raw), ("iTXt", "XML:com.adobe.xmp", xmp.format(6))]}
    for name, texts in chunks.items():
        info = PngImagePlugin.PngInfo()
        for kind, key, text in texts:
            if kind == "iTXt":
                info.add_itxt(key, text)
            else:
                info.add_text(key, text, zip=kind == "zTXt")
        Image.fromarray(synth.bar_frame(0, 24, 40)).save(tmp_path / "seq" / name, pnginfo=info)
    decoded = png_decodes_counted(monkeypatch)
    [source] = discover_inputs([str(tmp_path / "seq")])
    reader = open_reader(source)
    probe = reader.probe()
    assert (probe.width, probe.height) == (24, 40) and decoded == []
    assert [frame.shape for _, frame in reader] == [(40, 24, 3)] * 4
    assert reader.size_change == (3, (24, 40))  # 4.png: its EXIF says upright, its XMP aside
    for name in chunks:  # as Pillow's own turning decodes them
        with Image.open(tmp_path / "seq" / name) as image:
            assert shown_size(image) == np.asarray(ImageOps.exif_transpose(image)).shape[:2], name


def test_quieting_pillows_metadata_warnings_leaves_a_warning_shown_once_shown_once() -> None:
    """Adding a warning filter resets which warnings Python has shown once: called per frame (training's reader),
    it made any such warning repeat at every frame."""
    import warnings

    from clipvis.cli.video_io import quiet_metadata_warnings

    def warn() -> None:
        warnings.warn("shown once", UserWarning, stacklevel=1)

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        quiet_metadata_warnings()  # a reader starts
        for _ in range(3):
            warn()
            quiet_metadata_warnings()
    assert len([w for w in shown if "shown once" in str(w.message)]) == 1


def test_a_multi_picture_jpeg_is_one_still_its_first_picture(tmp_path: Path) -> None:
    """Phones' photos with a gain map (MPO: Pillow counts their pictures as frames) failed a folder of frames ("is an
    animation (2 frames)"), and one alone read the small second picture as frame 1 ("frame 1 is (16, 20, 3)")."""
    from PIL import Image

    folder = tmp_path / "seq"
    folder.mkdir()
    primary = Image.new("RGB", (40, 32), (200, 10, 10))
    primary.save(folder / "2.jpg", format="MPO", save_all=True, append_images=[Image.new("RGB", (20, 16), (0, 0, 0))])
    Image.new("RGB", (40, 32), (10, 200, 10)).save(folder / "1.jpg")
    with Image.open(folder / "2.jpg") as opened:
        assert opened.format == "MPO" and opened.n_frames == 2  # what the reader meets
    [source] = discover_inputs([str(folder)])
    indices, frames = read_all(open_reader(source))
    assert indices == [0, 1] and [f.shape for f in frames] == [(32, 40, 3)] * 2 and frames[1][0, 0, 0] > 150
    [alone] = discover_inputs([str(folder / "2.jpg")])
    indices, frames = read_all(open_reader(alone))
    assert indices == [0] and frames[0].shape == (32, 40, 3)
