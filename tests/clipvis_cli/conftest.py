"""Fixtures shared by the command tests: an isolated cache (the tiny checkpoint is in tests/conftest.py), glibc's
malloc arenas of a fresh process, and synthetic media for the `segment` I/O tests (inputs, decoding, writers), made
with PyAV / PIL.

The media helpers are plain functions here and reach the tests through the `synth` fixture (a namespace), or are
imported from this module (`from .conftest import ...`: tests run with `--import-mode=importlib`); `media` holds one
set of small files per test session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def no_process_tree_left() -> Iterator[None]:
    """After each test, the process trees it started (torchrun jobs: `process_trees.start_process_tree`) that are
    still running are killed whole: one that failed or timed out left torchrun's workers behind."""
    from .process_trees import end_process_trees

    yield
    end_process_trees()


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Iterator[Path]:
    """CLIPVIS_CACHE in a temp folder and no downloads, for the whole test. ``monkeypatch.undo()`` in the test would
    undo these too (the rest of the test then ran against the user's cache, downloads allowed): a test that restores
    its own patches halfway makes them in a ``pytest.MonkeyPatch.context()``, and one that undid these fails here."""
    user_cache = os.environ.get("CLIPVIS_CACHE")
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CLIPVIS_OFFLINE", "1")
    yield tmp_path / "cache"
    assert os.environ.get("CLIPVIS_CACHE") != user_cache, "the test undid isolated_cache (monkeypatch.undo()?)"


# A probe run in a fresh process: three threads allocate buffers below the mmap threshold, then glibc's malloc_info
# says how many arenas ("heaps") serve the process. `{prelude}` runs first, while the process has one thread.
ARENA_PROBE = """
import ctypes, re, sys, tempfile, threading
{prelude}
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]

def allocate():
    blocks = [libc.malloc(100_000) for _ in range(20)]
    for block in blocks:
        libc.free(block)

threads = [threading.Thread(target=allocate) for _ in range(3)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
path = tempfile.mktemp()
report = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, report)
libc.fclose(report)
print(len(re.findall("<heap nr=", open(path).read())))
"""


@pytest.fixture
def malloc_arenas_after():
    """``probe(prelude, env=None) -> (arenas, output)``: how many glibc malloc arenas a fresh process uses once three
    threads allocated, after running ``prelude`` first (its printed words come back as ``output``). The process has
    neither MALLOC_ARENA_MAX nor OMP_NUM_THREADS (unless ``env`` sets them): with the suite's OMP_NUM_THREADS=1,
    importing numpy and torch starts no thread, and a launcher that shares one arena only after them would pass.
    Skips where the C library is not glibc."""
    import platform
    import subprocess
    import sys

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc arenas are glibc's")

    def probe(prelude: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        unset = ("MALLOC_ARENA_MAX", "OMP_NUM_THREADS")
        environment = {k: v for k, v in os.environ.items() if k not in unset} | (env or {})
        result = subprocess.run(
            [sys.executable, "-c", ARENA_PROBE.format(prelude=prelude)],
            capture_output=True, text=True, env=environment, timeout=300,
        )
        assert result.returncode == 0, result.stderr
        *words, arenas = result.stdout.split()
        return int(arenas), " ".join(words)

    return probe


# --- synthetic media for the segment I/O tests ---------------------------------------------------------------------

BAR_WIDTH = 4


def bar_frame(index: int, height: int, width: int) -> np.ndarray:
    """A dark frame with a white vertical bar whose column encodes `index` (bar at x = BAR_WIDTH * index)."""
    image = np.full((height, width, 3), 16, np.uint8)
    start = (BAR_WIDTH * index) % max(width - BAR_WIDTH, 1)
    image[:, start : start + BAR_WIDTH] = 255
    return image


def bar_index(image: np.ndarray) -> int:
    """Recover the index encoded by `bar_frame` (robust to compression noise)."""
    profile = image.mean(axis=(0, 2))
    return int(np.argmax(np.convolve(profile, np.ones(BAR_WIDTH), mode="valid"))) // BAR_WIDTH


def corner_frame(height: int, width: int) -> np.ndarray:
    """A dark frame with a white block in the top-left corner (rows < h/2, cols < w/4)."""
    image = np.full((height, width, 3), 16, np.uint8)
    image[: height // 2, : width // 4] = 255
    return image


def write_video(
    path: Path,
    frames: Sequence[np.ndarray],
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rate: int | Fraction = 25,
    rotation: int | None = None,
    faststart: bool = False,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    codec_options: dict[str, str] | None = None,
    container_format: str | None = None,
) -> Path:
    """Encode RGB frames. `rotation` sets the display matrix (degrees counter-clockwise);
    `pts` + `time_base` give explicit (e.g. irregular, variable-frame-rate) timestamps; `codec_options` the encoder's
    (libx264's GOP size "g", B-frames "bf"); `container_format` FFmpeg's muxer where the name does not tell it."""
    options = {"movflags": "+faststart"} if faststart else {}
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w", format=container_format, options=options) as container:
        stream = container.add_stream(codec, rate=rate, options=codec_options or {})
        stream.width, stream.height = width, height
        stream.pix_fmt = pix_fmt
        if time_base is not None:
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_bar_video(path: Path, count: int, width: int = 64, height: int = 48, **kwargs) -> Path:
    return write_video(path, [bar_frame(i, height, width) for i in range(count)], **kwargs)


def write_palette_video(path: Path, count: int, width: int = 64, height: int = 48) -> Path:
    """A palette (pal8) rawvideo AVI of ``count`` frames, frame i a band of colour 200 at columns 8i..8i+8 (what
    old formats as MS-RLE and 8-bit QuickTime decode to: PyAV gives such a frame as an (image, palette) pair)."""
    palette = np.zeros((256, 4), np.uint8)
    palette[:, 0], palette[:, 1], palette[:, 3] = 255, np.arange(256), 255
    with av.open(str(path), "w") as container:
        stream = container.add_stream("rawvideo", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "pal8"
        for i in range(count):
            indices = np.zeros((height, width), np.uint8)
            indices[:, i * 8 : i * 8 + 8] = 200
            container.mux(stream.encode(av.VideoFrame.from_ndarray((indices, palette), format="pal8")))
        container.mux(stream.encode())
    return path


def write_audio_only(path: Path, codec: str = "aac") -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=16000)
        for _ in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_images(directory: Path, names: Sequence[str], height: int = 24, width: int = 40) -> list[Path]:
    """Write one bar frame per name; frame k (in the order of `names`) encodes index k."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, name in enumerate(names):
        path = directory / name
        Image.fromarray(bar_frame(k, height, width)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def synth() -> SimpleNamespace:
    """The helper functions of this module."""
    return SimpleNamespace(
        bar_frame=bar_frame,
        bar_index=bar_index,
        corner_frame=corner_frame,
        write_video=write_video,
        write_bar_video=write_bar_video,
        write_palette_video=write_palette_video,
        write_audio_only=write_audio_only,
        write_images=write_images,
    )


@pytest.fixture(scope="session")
def rotated(media: dict[str, Path]) -> dict[str, Path]:
    """The videos with rotation metadata (skips the test if this PyAV cannot write them)."""
    if "rot90" not in media:
        pytest.skip("this PyAV version cannot write display-rotation metadata")
    return media


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small videos covering the decoder's cases, keyed by what they exercise."""
    root = tmp_path_factory.mktemp("media")
    files = {
        "h264": write_bar_video(root / "bars.mp4", 12),
        "odd_mpeg4": write_bar_video(root / "odd.avi", 5, width=97, height=61, codec="mpeg4"),
        "odd_vp9": write_bar_video(root / "odd.webm", 3, width=97, height=61, codec="libvpx-vp9"),
        "one": write_bar_video(root / "one.mp4", 1),
        "tiny": write_bar_video(root / "tiny.mkv", 3, width=2, height=2),
        "vfr": write_bar_video(
            root / "vfr.mp4", 6, pts=[0, 40, 50, 120, 130, 300], time_base=Fraction(1, 1000)
        ),
        "long_faststart": write_bar_video(root / "long.mp4", 120, width=320, height=240, faststart=True),
        "audio": write_audio_only(root / "audio.m4a"),
    }
    if hasattr(av.video.stream.VideoStream, "set_display_rotation"):  # PyAV >= 18 can write rotation
        files["rot90"] = write_video(root / "rot90.mp4", [corner_frame(48, 64)] * 3, rotation=90)
        files["rot270"] = write_video(root / "rot270.mp4", [corner_frame(48, 64)] * 3, rotation=-90)
        files["rot180"] = write_video(root / "rot180.mp4", [corner_frame(48, 64)] * 2, rotation=180)
    files["zero"] = root / "zero.mp4"
    files["zero"].write_bytes(b"")
    files["text"] = root / "text.mp4"
    files["text"].write_text("this is not a video\n" * 20)
    data = files["long_faststart"].read_bytes()
    files["truncated_faststart"] = root / "truncated_faststart.mp4"
    files["truncated_faststart"].write_bytes(data[: len(data) // 2])
    zeroed = bytearray(files["h264"].read_bytes())  # intact container, video data overwritten
    start, end = zeroed.find(b"mdat") + 4, zeroed.find(b"moov") - 4
    zeroed[start:end] = bytes(end - start)
    files["zeroed_data"] = root / "zeroed_data.mp4"
    files["zeroed_data"].write_bytes(bytes(zeroed))
    plain = files["h264"].read_bytes()  # moov atom at the end: cutting it loses the index
    files["truncated_plain"] = root / "truncated_plain.mp4"
    files["truncated_plain"].write_bytes(plain[: len(plain) // 2])
    return files
