"""Still and animated images through Pillow: EXIF orientation, RGB conversion of any mode, an animation's pictures
and their durations, and which files Pillow (not FFmpeg) reads."""

from __future__ import annotations

import mmap
import struct
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError


def resized_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (``[H, W, 3]``) at ``size`` (height, width): how a video keeps one size when a frame comes in
    another (a resolution change mid-stream: the first frame's size; an image folder's photo turned upright by its
    EXIF: the size most of its images have), in segment and in training alike (cv2's area interpolation)."""
    if image.shape[:2] == tuple(size):
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def picture_count(image: Image.Image) -> int:
    """The frames of an opened image: an animation's (GIF, APNG, WebP), 1 for a still. A multi-picture JPEG (MPO:
    phones' photos with a gain map or a depth map, 3D cameras) is one still, its first picture, as viewers, FFmpeg
    and OpenCV show it (Pillow counts its pictures as frames)."""
    if image.format == "MPO":
        return 1
    return int(getattr(image, "n_frames", 1))


def _frame_durations_ms(image: Image.Image, path: Path, count: int) -> list[float]:
    """Each frame's display time in ms (0 where the file gives none; a GIF's as `_gif_frame_durations_ms` times
    them). Pillow has them for APNG and GIF; for WebP they are read from the file's ANMF chunks (24-bit little-endian
    at offset 12 of each)."""
    if image.format == "WEBP":
        durations = _webp_frame_durations(path)
        return durations if len(durations) == count else [0.0] * count
    if image.format == "GIF":
        return _gif_frame_durations_ms(image, count)
    durations = []
    for index in range(count):
        image.seek(index)
        durations.append(float(image.info.get("duration") or 0))
    image.seek(0)
    return durations


# A GIF frame's delay where its Graphic Control Extension gives none (0) and before any frame gave one: FFmpeg's GIF
# demuxer's default (its `default_delay` option, 10 hundredths of a second), which browsers show such frames for too
GIF_DEFAULT_DELAY_MS = 100.0


def _gif_frame_durations_ms(image: Image.Image, count: int) -> list[float]:
    """A GIF's frames' display times in ms as FFmpeg's GIF demuxer times them (what `VideoReader` gives a GIF it
    reads): a frame's own delay, a delay of 0 `GIF_DEFAULT_DELAY_MS`, and a frame without a Graphic Control Extension
    (Pillow gives it no "duration") the delay of the frame before it (`GIF_DEFAULT_DELAY_MS` for the first)."""
    durations: list[float] = []
    delay = 0.0
    for index in range(count):
        image.seek(index)
        own = image.info.get("duration")
        delay = float(own) if own is not None else delay
        durations.append(delay or GIF_DEFAULT_DELAY_MS)
    image.seek(0)
    return durations


def _webp_frame_durations(path: Path) -> list[float]:
    data = path.read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return []
    durations, offset = [], 12
    while offset + 8 <= len(data):
        kind, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
        if kind == b"ANMF" and size >= 16:
            durations.append(float(int.from_bytes(data[offset + 20 : offset + 23], "little")))
        offset += 8 + size + (size & 1)
    return durations


# Pillow's modes of one channel wider than 8 bits (16-bit PNG and TIFF: depth, thermal, medical, microscopy frames)
_WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


# The transposition that turns an image upright, per EXIF orientation value (2..8; 1 is upright already)
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


_EXIF_ORIENTATION = 0x0112


def quiet_metadata_warnings() -> None:
    """Silence Pillow's warnings about damaged EXIF or TIFF metadata: it warns, once per distinct message, about every
    damaged tag it skips while opening an image ("Corrupt EXIF data", "Tag data larger than file"), noise per frame
    when only the orientation tag matters here, and that tag's damage leaves the frame as stored. Called by the
    readers as they start (a filter set once at import is lost where the caller restores its warning filters); the
    filter is added only where it is missing, as adding one resets which warnings Python has shown once already."""
    module = r"PIL\.TiffImagePlugin"
    if not any(action == "ignore" and category is UserWarning and getattr(pattern, "pattern", None) == module
               for action, _, category, pattern, _ in warnings.filters):
        warnings.filterwarnings("ignore", category=UserWarning, module=module)


# The transpositions that swap width and height (a quarter turn, with or without a flip)
_QUARTER_TURNS = (Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270, Image.Transpose.TRANSVERSE,
                  Image.Transpose.ROTATE_90)


def _upright_transpose(image: Image.Image) -> Image.Transpose | None:
    """The transposition ``image``'s EXIF orientation tag asks for; None for none, or EXIF that cannot be read."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # noqa: BLE001 - any damage to the EXIF block: no orientation to apply
        return None
    return _ORIENTATIONS.get(orientation) if isinstance(orientation, int) else None


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation tag says. The tag is read alone: ``ImageOps.exif_transpose`` writes
    the whole EXIF block again, and one damaged tag of it (a camera's, or a bad edit) failed the frame although its
    pixels were whole. EXIF that cannot be read leaves the image as stored (as detectron2's ``read_image``)."""
    method = _upright_transpose(image)
    return image.transpose(method) if method is not None else image


def shown_size(image: Image.Image) -> tuple[int, int]:
    """(height, width) of an opened image as ``rgb_array`` gives it (turned upright), from its header alone: Pillow
    decodes no pixels for ``size`` nor for a JPEG's, TIFF's or WebP's EXIF block. A PNG's EXIF (an eXIf chunk) is
    read where it comes before the pixels (``image.info``): Pillow's ``getexif`` of a PNG without one there decodes
    the whole picture to look behind it (25 ms per 1080p frame, every image of a folder of ffmpeg's PNGs). So the
    chunks behind the pixels are walked first, their headers only (`_png_orientation_follows_pixels`: 0.2 ms per
    1080p frame), and only a PNG whose orientation may follow its pixels (rare) takes ``getexif``'s way, so that its
    size is the one ``rgb_array`` gives (such a PNG was counted unturned, then resized with a warning); one whose
    orientation is in a text chunk before them (XMP, ImageMagick's EXIF profile) is read from ``info``."""
    width, height = image.size
    if image.format == "PNG" and "exif" not in image.info and not _png_orientation_follows_pixels(image):
        # an orientation in a text chunk before the pixels (ImageMagick's EXIF profile, XMP), which decoding turns
        # the picture by too: read from ``info`` as ``getexif`` reads it, without decoding the pixels
        if not any(key in image.info for key in _PNG_ORIENTATION_INFO_KEYS):
            return (height, width)
        method = _info_transpose(image.info)
    else:
        method = _upright_transpose(image)
    return (width, height) if method in _QUARTER_TURNS else (height, width)


# The keys of a PNG's ``info`` that Pillow's ``getexif`` takes an orientation from besides "exif" (an eXIf chunk):
# ImageMagick's hex EXIF profile and XMP (its tiff:Orientation), as text (tEXt, zTXt, iTXt) or as iTXt's bytes
_PNG_ORIENTATION_INFO_KEYS = ("Raw profile type exif", "XML:com.adobe.xmp", "xmp")


def _info_transpose(info: dict) -> Image.Transpose | None:
    """The transposition an image's metadata ``info`` asks for, as Pillow's ``Image.getexif`` reads it from there
    (its own code, run on a blank image holding a copy of ``info``: a PNG's ``getexif`` decodes the pixels first, to
    read the chunks behind them); None for none, or metadata that cannot be read."""
    holder = Image.Image()
    holder.info = dict(info)
    return _upright_transpose(holder)


# The chunks behind a PNG's pixels that Pillow's decoding adds to ``info`` and ``getexif`` reads an orientation from:
# an eXIf chunk, or a text chunk of one of these keywords (ImageMagick's hex EXIF profile, XMP's tiff:Orientation).
_PNG_TEXT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt"})
_PNG_ORIENTATION_KEYWORDS = (b"Raw profile type exif\x00", b"XML:com.adobe.xmp\x00")


def _png_orientation_follows_pixels(image: Image.Image) -> bool:
    """Whether an opened PNG holds, behind its pixel data (IDAT) and before IEND, a chunk ``getexif`` would take an
    orientation from once the picture is decoded (eXIf, or a text chunk of `_PNG_ORIENTATION_KEYWORDS`). Reads the
    chunk headers only (PNG: 4-byte big-endian length, 4-byte type, data, 4-byte CRC), through a memory map, so no
    pixel data is read; an animation's chunks end at its next frame's (fcTL), as Pillow's decoding stops there. False
    for a file that cannot be mapped (then it counts as unturned, as it did)."""
    file = getattr(image, "fp", None)
    try:
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:  # type: ignore[union-attr]
            offset, pixels_seen = 8, False
            while offset + 8 <= len(data):
                length, kind = struct.unpack_from(">I4s", data, offset)
                if kind == b"IEND" or (pixels_seen and kind == b"fcTL"):
                    return False
                if kind in (b"IDAT", b"fdAT"):
                    pixels_seen = True
                elif pixels_seen and (kind == b"eXIf" or (kind in _PNG_TEXT_CHUNKS and any(
                        data[offset + 8 : offset + 8 + len(key)] == key for key in _PNG_ORIENTATION_KEYWORDS))):
                    return True
                offset += 12 + length
    except (AttributeError, OSError, ValueError, struct.error):  # no file (a stream), empty, not mappable
        return False
    return False


def most_common_size(sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The size most of ``sizes`` have; where several tie, the one that comes first. An image folder's frames are
    all made this size: one odd image first in the folder (a phone photo turned upright) no longer sets the size
    of all the others. ``sizes`` must not be empty."""
    counts = Counter(sizes)
    return counts.most_common(1)[0][0]  # Counter orders equal counts as first met


def rgb_array(image: Image.Image) -> np.ndarray:
    """An opened image as ``[H, W, 3]`` uint8 RGB, turned upright as its EXIF orientation says (as detectron2's
    ``read_image``). A 16-bit gray image keeps its top 8 bits: Pillow's ``convert("RGB")`` clips every value above
    255, which made such frames white."""
    image = upright(image)
    if image.mode in _WIDE_GRAY_MODES:
        gray = (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def animation_frame_rgb(image: Image.Image) -> np.ndarray:
    """An animation's current frame (Pillow's picture so far: a GIF's frames drawn over the ones before as each
    one's disposal says) as ``rgb_array`` gives it, but a GIF's transparent pixels white, as FFmpeg's GIF decoder
    gives them (`VideoReader`'s GIFs): Pillow's RGB conversion showed them in whatever colour the palette's
    transparent entry held."""
    if image.format != "GIF" or (image.mode != "RGBA" and "transparency" not in image.info):
        return rgb_array(image)
    rgba = np.asarray(upright(image).convert("RGBA"), dtype=np.uint8)
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 255
    return rgb


def _file_header(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of the regular file ``path``; b"" for anything else or a file that cannot be read (its
    reader says why)."""
    try:
        if not path.is_file():  # (a pipe is not opened here: that waits for a writer)
            return b""
        with open(path, "rb") as file:
            return file.read(size)
    except OSError:
        return b""


def _is_webp(path: Path) -> bool:
    """Whether the file is a WebP image by its first bytes (a RIFF container of form WEBP), whatever its name."""
    header = _file_header(path, 12)
    return header[:4] == b"RIFF" and header[8:12] == b"WEBP"


def _is_gif(path: Path) -> bool:
    """Whether the file is a GIF by its first bytes (its signature), whatever its name."""
    return _file_header(path, 6) in (b"GIF87a", b"GIF89a")


def _pillow_reads(path: Path) -> bool:
    """Whether Pillow recognises the file as an image (its header only)."""
    quiet_metadata_warnings()
    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False
