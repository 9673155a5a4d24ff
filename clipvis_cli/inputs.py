"""Input discovery for `clipvis segment`: turn command-line arguments into an ordered list of video sources.

Accepted arguments:

* a video file (any extension when named explicitly: the decoder decides whether it is a video);
* a single image file (a 1-frame video; an animated WebP / PNG / GIF is a video of its frames);
* a directory: if it holds only images (no video files, no sub-directories but the folders clipvis writes) it
  is ONE video whose frames are the images in natural sort order (the YouTube-VIS / LV-VIS / DAVIS
  `JPEGImages/<video>/` layout); otherwise it is searched recursively for video files (known extensions) and image
  folders. Hidden entries (".name") and the folders file servers and archivers add (`@eaDir`, `__MACOSX`, ...:
  SYSTEM_FOLDERS) are skipped; loose images next to videos or sub-directories are not processed, and said so
  (``warnings``); a folder the directory holds both directly and through a symbolic link is found at its real path
  (`search_tree`);
* a glob pattern (`'videos/**/*.mp4'`, for shells that did not expand it): every match is handled like a
  named path, except that where the pattern's last part names no extension of its own (`*`, `**/*`, `*.*`: a
  wildcard after its last dot, or no dot) matched files with an extension not in the lists are skipped, one warning
  per pattern (`SkippedMatches`); a pattern ending in a literal extension (`*.dat`, `cam_??.insv`) has its matches
  decoded whatever that extension, as the files named. The matches come in the order a search of their folders
  gives (natural order path part by path part: `tree_order`);
* `-`: newline-separated arguments read from stdin (`find . -name '*.mov' | clipvis segment - ...`), or with
  `--null` NUL-separated ones (`find . -print0 | clipvis segment --null - ...`).

Problems never raise: a missing path, a pattern without matches or an empty directory comes back as a
`VideoSource` with `error` set, so one bad argument fails one input, not the batch. Duplicates (same
resolved path) are dropped, keeping the first occurrence; order is argument order, then natural order
inside directories.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TextIO, TypeVar

from clipvis.cli.locks import LOCK_NAME
from clipvis.cli.messages import error_reason, path_text, shown_path
from clipvis.paths import missing_reason

# What a folder's search takes for a video (a file named directly is decoded whatever its name): the containers and
# raw streams FFmpeg reads, a folder search skipped silently otherwise (hunter 92: .mxf, .vob, .h264, ...).
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi", ".divx", ".wmv", ".asf", ".flv", ".f4v", ".mpg",
        ".mpeg", ".m2v", ".vob", ".ts", ".mts", ".m2ts", ".3gp", ".3g2", ".ogv", ".mxf", ".nut", ".ivf", ".dv",
        ".gif", ".y4m", ".h264", ".264", ".hevc", ".h265", ".265",
        ".mod", ".tod", ".insv", ".rm", ".rmvb",  # camcorders' MPEG-2 (JVC, Panasonic), Insta360's MP4, RealMedia
    }
)
# Netpbm (.ppm/.pgm/.pbm/.pnm) frames are common in robotics datasets; .jfif and .jpe are JPEG's other names.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp", ".tif",
                                              ".tiff", ".ppm", ".pgm", ".pbm", ".pnm"})
# Photo formats Pillow reads not at all or only with a plug-in or a recent build (HEIC/HEIF: iPhones', AVIF, JPEG XL):
# an image folder's search leaves them out, and says so (`unread_images_warning`): a frame left out silently moved
# every later frame up one.
UNREAD_IMAGE_EXTENSIONS: frozenset[str] = frozenset({".heic", ".heif", ".avif", ".jxl"})

_GLOB_CHARS = re.compile(r"[*?\[]")
_DIGITS = re.compile(r"(\d+)")

SourceKind = Literal["video", "images"]


@dataclass(frozen=True)
class VideoSource:
    """One input video.

    kind "video": `path` is a file for the video decoder. kind "images": `path` is the image folder (or
    the single image) and `frame_files` are the frames in order. `error` is a one-line reason when the
    input cannot be used (then `kind` is meaningless and `frame_files` empty). `argument` is the
    command-line argument it came from.
    """

    path: Path
    kind: SourceKind = "video"
    frame_files: tuple[Path, ...] = ()
    error: str | None = None
    argument: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def stem(self) -> str:
        """Natural output-folder name before de-duplication (file stem, or folder name for image folders)."""
        if self.kind == "images" and is_dir_quietly(self.path):
            # `clipvis segment .` (or `..`) inside an image folder: the folder's own name, not "video"
            name = self.path.name if self.path.name not in ("", ".", "..") else Path(os.path.abspath(self.path)).name
        else:
            name = self.path.stem
        # cut to a name the file systems take: a long name's undecodable bytes, 4 bytes each as `_xNN`, made the
        # folder's name pass 255 bytes ("output not writable (File name too long)"); `-N` names are cut as well
        # (clipvis.cli.writers.layout.numbered_name), so two inputs cut to one stem get `stem` and `stem-2`
        return safe_stem(name, max_bytes=NAME_MAX_BYTES)

    def size_estimate(self) -> int:
        """Bytes of the input, to spread inputs over processes largest first: the file's size, for an image folder
        its frame count times its first frame's size; 0 when unknown (unreadable inputs)."""
        if not self.ok:
            return 0
        first = self.frame_files[0] if self.kind == "images" and self.frame_files else self.path
        try:
            return first.stat().st_size * max(1, len(self.frame_files))
        except OSError:
            return 0

    def describe_error(self) -> str:
        """One line: `<path>: <reason>` (empty string when there is no error)."""
        return f"{shown_path(self.path)}: {self.error}" if self.error else ""


def natural_sort_key(text: str, file: bool = False) -> tuple:
    """Sort key that orders embedded numbers numerically: 1.png < 2.png < 10.png; case-insensitive text. With
    ``file`` the name is a file's: its stem is compared first and its suffix only between equal stems, so the
    extension is no part of the natural name (clip.mp4 < clip-2.mp4 < clip10.mp4; as one text, "clip.mp4" was
    "clip.mp" and the number 4, and came last)."""
    stem, suffix = os.path.splitext(text) if file else (text, "")
    # the name itself breaks ties (case), apart: appended to the parts, "cam" vs "cam2" compared "cam" with 2
    return _natural_parts(stem), _natural_parts(suffix), text


def _natural_parts(text: str) -> tuple:
    """``text`` as alternating text and numbers, so two keys compare text with text and numbers with numbers. A text
    part that a number follows ends in "0" (for the digits), so it compares with a longer text part as the name's
    characters do: "clip-2" < "clip10" ('-' < a digit), where "clip" < "clip-" put clip10 first; a name that ends
    ("cam") still comes before one going on with a number ("cam2")."""
    parts = _DIGITS.split(text)
    return tuple(
        int(part) if i % 2 else part.lower() + ("0" if i + 1 < len(parts) else "") for i, part in enumerate(parts)
    )


@dataclass(frozen=True)
class SkippedMatches:
    """The matches of a glob pattern left out as not videos by their extension (a pattern naming no extension of its
    own: `pattern_names_extension`), in match order."""

    pattern: str
    files: tuple[Path, ...]

    def warning(self) -> str:
        """One line: how many matches were skipped, one of them, and how to have them decoded."""
        first = self.files[0]
        matches = f"{len(self.files)} matches skipped as not videos by their extension, such as" \
            if len(self.files) > 1 else "1 match skipped as not a video by its extension:"
        end = f", or end the pattern in {path_text(first.suffix)}," if first.suffix else ""
        return f"{path_text(self.pattern)}: {matches} {path_text(first)}; name the file{end} to have it decoded"


def pattern_names_extension(pattern: str) -> bool:
    """Whether a glob pattern's last part ends in an extension of its own: a dot with no wildcard after it
    (``*.dat``, ``cam_??.insv``), where ``*``, ``**``, ``*.*``, ``*.[mM][pP]4`` name none. The user typed that
    extension, so its matches are decoded as files named on the command line are."""
    name = Path(pattern).name
    dot = name.rfind(".")
    return 0 < dot < len(name) - 1 and not _GLOB_CHARS.search(name[dot + 1:])


def discover_inputs(
    arguments: Sequence[str],
    stdin_arguments: Sequence[str] = (),
    warnings: list[str] | None = None,
    skipped_matches: list[SkippedMatches] | None = None,
    notes: list[str] | None = None,
) -> list[VideoSource]:
    """Expand command-line arguments into video sources (see module docstring).

    ``stdin_arguments`` are what an argument ``-`` stands for (`read_argument_lines`), expanded where the first ``-``
    stands. ``warnings``: gets one line per folder whose images are not processed (it holds a video or a
    sub-folder too), once each, one per file clipvis wrote that a list on stdin or a pattern gave (skipped:
    a folder search leaves out the folders clipvis made; named as an argument, such a file is an input), and one per
    pattern whose matches with an extension not in the lists were skipped (`SkippedMatches.warning`).
    ``skipped_matches``: gets those patterns, for an error that finds no input to name them. ``notes``: gets one
    line per folder clipvis made that an argument or a pattern gave (`clipvis_folder_skipped`), skipped: a video's
    output folder, or an output root holding nothing but clipvis' folders (`clipvis segment data/* -o data/out` run
    again).
    """
    said: list[str] = []
    skipped_folders: list[str] = []
    listed = set(stdin_arguments) - set(arguments)
    filtered: dict[str, list[Path]] = {}  # by pattern: its matches skipped as not videos by their extension

    def expand(path: Path, argument: str, explicit: bool) -> list[VideoSource]:
        # A file a list or a pattern gives that clipvis wrote (`find . -name '*.mp4' | clipvis segment -` run again
        # where the output root is under `.`: its overlays), as a folder search leaves out the folders clipvis made.
        if (argument in listed or not explicit) and not is_dir_quietly(path) and (folder := _output_folder(path)):
            said.append(f"{path_text(path)}: {SKIPPED_OUTPUT} (in {path_text(folder)}, a folder of its outputs); "
                        "name it as an argument to segment it")
            return []
        # A folder clipvis made, named or matched (`clipvis segment data/* -o data/out` run again): a video's output
        # folder, or an output root holding nothing but clipvis' folders; an output root holding your videos too
        # (`-o .`) is searched as ever.
        folder = is_dir_quietly(path)
        if folder and _output_folder_of(path):
            skipped_folders.append(clipvis_folder_skipped(path))
            return []
        decoded_whatever_its_name = explicit or pattern_names_extension(argument)
        found = _expand_path(path, argument, decoded_whatever_its_name, said)
        if folder and found == [_empty_folder(path, argument)] and _made_by_clipvis(path):
            skipped_folders.append(clipvis_folder_skipped(path))
            return []
        if not found and not decoded_whatever_its_name:  # a pattern's match left out by the extension lists
            filtered.setdefault(argument, []).append(path)
        return found

    sources = expand_arguments(arguments, stdin_arguments, expand, _failed_source)
    skipped = [SkippedMatches(pattern, tuple(dict.fromkeys(files))) for pattern, files in filtered.items()]
    if warnings is not None:
        warnings.extend(dict.fromkeys(said + [pattern.warning() for pattern in skipped]))
    if skipped_matches is not None:
        skipped_matches.extend(skipped)
    if notes is not None:
        notes.extend(dict.fromkeys(skipped_folders))
    return sources


def clipvis_folder_skipped(folder: Path) -> str:
    """The note for a folder clipvis made that an argument or a pattern gave, skipped (its overlay.mp4 is no input)."""
    return f"skipped: {shown_path(folder)} is a clipvis output folder"


class ArgumentInput(Protocol):
    """What `expand_arguments` makes of an argument: a path, or a path and the one-line reason it cannot be used."""

    @property
    def path(self) -> Path: ...

    @property
    def error(self) -> str | None: ...

    @property
    def argument(self) -> str: ...


InputT = TypeVar("InputT", bound=ArgumentInput)
T = TypeVar("T")


def expand_arguments(
    arguments: Sequence[str],
    stdin_arguments: Sequence[str],
    expand_path: Callable[[Path, str, bool], list[InputT]],
    failed: Callable[[Path, str, str], InputT],
    no_match: str = "no file matches this pattern",
) -> list[InputT]:
    """The command-line arguments of `segment` and `export` as inputs, in argument order, duplicates (same resolved
    path) dropped.

    An argument ``-`` stands for ``stdin_arguments`` (the first one only). Each argument names an existing path,
    which becomes ``expand_path(path, argument, True)``, or is a glob pattern, each of whose matches becomes
    ``expand_path(match, argument, False)`` (in natural order). An argument that names nothing, a pattern without
    matches (``no_match``) and a path that cannot even be looked at (a name too long for the file system, a folder
    we may not enter: an OSError of ``expand_path`` too) become ``failed(path, reason, argument)``: one bad argument
    fails one input, never the batch. `skipped_name` says which entries a folder search leaves out.
    """
    found: list[InputT] = []
    stdin_read = False
    for argument in arguments:
        if argument == "-":
            if stdin_read:
                continue
            stdin_read = True
            for line in stdin_arguments:
                found.extend(_expand_argument(line, expand_path, failed, no_match))
        else:
            found.extend(_expand_argument(argument, expand_path, failed, no_match))
    return _deduplicate(found)


def skipped_name(name: str) -> bool:
    """Whether a folder search leaves out an entry of this name: hidden (".name"), or one of the SYSTEM_FOLDERS."""
    return name.startswith(".") or name in SYSTEM_FOLDERS


def search_tree(root: Path, search: Callable[[Path, set[str], list[Path]], Iterable[T]]) -> list[T]:
    """What ``search(folder, visited, links)`` finds in ``root`` and below, each folder named by its real path where
    the tree holds it directly as well as through a symbolic link (``tree/link -> a``: ``tree/a``, not
    ``tree/link``), whatever order the folders are listed in.

    ``search`` walks a folder once per real path (``visited``, which also ends symbolic-link loops) and, instead of
    entering a sub-folder that is a symbolic link, adds it to ``links``: those are searched after everything reached
    without one, so a folder reached both ways is found at its own path and skipped through the link; one that only
    a link reaches (a link to a folder outside the tree, or to a hidden one) is found through the link."""
    visited: set[str] = set()
    links: list[Path] = []
    found = list(search(root, visited, links))
    while links:
        found.extend(search(links.pop(0), visited, links))
    return found


def tree_order(root: Path) -> Callable[[ArgumentInput], tuple]:
    """Sort key: the order of a walk of ``root`` with each folder's entries in natural order (one natural key per
    part of the path below ``root``)."""
    return lambda item: path_order_key(item.path.relative_to(root), not is_dir_quietly(item.path))


def in_path_order(sources: Sequence[VideoSource]) -> list[VideoSource]:
    """``sources`` sorted as a walk of their folders finds them (`path_order_key`; a folder argument's own order), so
    that processes given the same inputs in other orders (``--shard``) number them alike."""
    return sorted(sources, key=lambda source: path_order_key(source.path, not is_dir_quietly(source.path)))


def path_order_key(path: Path, file: bool) -> tuple:
    """Sort key of a path: one natural key per part, so paths sort as a walk of their folders does (``cam/a``,
    ``cam2/a``, ``Cam10/a``), not as strings (where ``cam2/`` came before ``cam/``: "cam2" against "cam/"). ``file``:
    the last part is a file's name (`natural_sort_key`)."""
    parts = path.parts
    return tuple(natural_sort_key(part, file and i == len(parts) - 1) for i, part in enumerate(parts))


def list_image_frames(directory: Path) -> list[Path]:
    """Image files directly inside `directory` (hidden ones skipped), in natural sort order."""
    # a broken symbolic link is listed (reading it then fails the video): left out, it shifted every later frame
    frames = [
        entry
        for entry in _visible_entries(directory)
        if entry.suffix.lower() in IMAGE_EXTENSIONS and (entry.is_file() or entry.is_symlink() and not entry.exists())
    ]
    return sorted(frames, key=lambda p: natural_sort_key(p.name, file=True))


def unread_images_warning(directory: Path, image_folder: bool = True) -> str | None:
    """The warning for a folder holding photos clipvis does not read (UNREAD_IMAGE_EXTENSIONS): an image folder's
    frames leave them out, and a folder of such photos alone (an iPhone export) is no input at all
    (``image_folder`` False); the first such file in natural order and how many there are; None when there are none.
    Other files (Thumbs.db, notes.txt) are no images and left out without a word."""
    unread = sorted((entry for entry in _visible_entries(directory)
                     if entry.suffix.lower() in UNREAD_IMAGE_EXTENSIONS), key=lambda p: natural_sort_key(p.name, True))
    if not unread:
        return None
    first = path_text(unread[0].name)
    left_out = f"1 image left out, {first}" if len(unread) == 1 else f"{len(unread)} images left out, such as {first}"
    them = "it" if len(unread) == 1 else "them"
    if not image_folder:
        return (f"{path_text(directory)}: {left_out}: clipvis does not read {unread[0].suffix.lower()} images, so "
                "the folder is no image-folder input (convert them to .png or .jpg to segment it)")
    return (f"{path_text(directory)}: {left_out}: clipvis does not read {unread[0].suffix.lower()} images, so the "
            f"video has no frame for {them} (convert such images to .png or .jpg to keep every frame)")


def is_image_folder(directory: Path) -> bool:
    """True if `directory` holds at least one image and no video files and no (visible) sub-directories but the
    folders clipvis writes (`clipvis segment imgs/ -o imgs/out`: the output root it made is no sub-folder)."""
    has_image = False
    for entry in _visible_entries(directory):
        if entry.is_dir():
            if _made_by_clipvis(entry):
                continue
            return False
        suffix = entry.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            return False
        has_image = has_image or suffix in IMAGE_EXTENSIONS
    return has_image


def read_argument_lines(stream: TextIO | None, null: bool = False) -> list[str]:
    """The arguments ``-`` stands for: the non-blank lines of ``stream``, or with ``null`` its entries separated by
    NUL characters (``find -print0``, ``xargs -0``: the one way to pass a file name that holds a newline).

    Read as bytes where the stream has them, so a file name that is not UTF-8 arrives intact. ValueError for a
    ``null`` list with newlines but no NUL (a list made without ``-print0``), and for a stdin that is closed
    (``<&-``: Python's ``sys.stdin`` is None) or cannot be read.
    """
    if stream is None:
        raise ValueError("-: stdin is closed: there is no list of inputs to read")
    binary = getattr(stream, "buffer", None)
    try:
        data: bytes | str = binary.read() if binary is not None else stream.read()
    except OSError as error:
        raise ValueError(f"-: cannot read the list of inputs on stdin ({error_reason(error)})") from None
    text = os.fsdecode(data) if isinstance(data, bytes) else data
    if null and "\0" not in text and "\n" in text:
        raise ValueError("--null: the list on stdin holds newlines but no NUL character (made without -print0?)")
    entries = [os.fsdecode(raw) for raw in data.split(b"\0" if null else b"\n")] if isinstance(data, bytes) else \
        data.split("\0" if null else "\n")
    if null:  # whitespace alone, as a newline after the last NUL (echo, an editor), is no name
        return [entry for entry in entries if entry.strip()]
    return [line.rstrip("\r") for line in entries if line.strip()]


def _expand_argument(
    argument: str,
    expand_path: Callable[[Path, str, bool], list[InputT]],
    failed: Callable[[Path, str, str], InputT],
    no_match: str,
) -> list[InputT]:
    path = Path(os.path.expanduser(argument))  # (Path.expanduser raises for `~user` of no user: os's keeps it)
    try:
        if path.exists():
            return expand_path(path, argument, True)
        if _GLOB_CHARS.search(argument):
            # in the order a folder argument's search gives (`tree_order`): path part by path part
            matches = sorted(map(Path, glob_matches(str(path))),
                             key=lambda match: path_order_key(match, not is_dir_quietly(match)))
            if not matches:
                return [failed(path, no_match, argument)]
            return [found for match in matches for found in expand_path(match, argument, False)]
        return [failed(path, missing_reason(path), argument)]
    except OSError as error:  # e.g. a name too long for the file system, a folder we may not enter
        return [failed(path, f"cannot read ({error_reason(error)})", argument)]


def glob_matches(pattern: str) -> list[str]:
    """The paths ``pattern`` matches, as ``glob.glob(pattern, recursive=True)`` gives them (each part matched with
    fnmatch, names starting with a dot only by a part that starts with one, ``**`` a whole part for any number of
    folders), except that ``**`` does not enter a folder linked back to one it is already in: Python's glob followed
    such links, and a tree with two links to ``.`` made its walk grow without end where the folder search took
    seconds (hunter 158). A pattern's last separator is dropped (`Path`'s rule): ``a/**/`` is ``a/**``."""
    path = Path(pattern)
    start = path.anchor
    matches = _glob_under(start, path.parts[1:] if start else path.parts,
                          frozenset({os.path.realpath(start or os.curdir)}))
    return list(dict.fromkeys(matches))


def _glob_under(base: str, parts: Sequence[str], within: frozenset[str]) -> Iterator[str]:
    """`glob_matches`' walk: the matches of ``parts`` under ``base`` ('' for the working folder), ``within`` the real
    paths of the folders ``base`` lies in."""
    if not parts:
        yield base
        return
    head, rest = parts[0], parts[1:]
    if not glob.has_magic(head):
        child = os.path.join(base, head)
        if rest and os.path.isdir(child):
            yield from _glob_under(child, rest, within | {os.path.realpath(child)})
        elif not rest and os.path.lexists(child):
            yield child
        return
    if head == "**" and not rest:  # everything below: glob's `a/**` gives `a/` first, then each file and folder
        if base:
            yield os.path.join(base, "")
        yield from _below(base, within)
        return
    names = _listing(base or os.curdir)
    if head == "**":  # any number of folders: the rest matched here, then in each folder below
        yield from _glob_under(base, rest, within)
        for child, real in _folders_to_enter(base, names, within):
            yield from _glob_under(child, parts, within | {real})
        return
    for name, is_dir in names:
        if (name.startswith(".") and not head.startswith(".")) or not fnmatch.fnmatchcase(name, head):
            continue
        child = os.path.join(base, name)
        if not rest:
            yield child
        elif is_dir:
            yield from _glob_under(child, rest, within | {os.path.realpath(child)})


def _below(base: str, within: frozenset[str]) -> Iterator[str]:
    """Every file and folder below ``base`` but hidden ones, as a last ``**`` matches them; a folder linked back to
    one of ``within`` is named, not entered."""
    names = _listing(base or os.curdir)
    entered = dict(_folders_to_enter(base, names, within))
    for name, _ in names:
        if name.startswith("."):
            continue
        child = os.path.join(base, name)
        yield child
        if child in entered:
            yield from _below(child, within | {entered[child]})


def _folders_to_enter(
    base: str, names: Sequence[tuple[str, bool]], within: frozenset[str]
) -> Iterator[tuple[str, str]]:
    """The folders among ``names`` (of ``base``) that ``**`` goes into, with their real paths: not hidden, and not
    linked back to one of ``within``."""
    for name, is_dir in names:
        if is_dir and not name.startswith("."):
            child = os.path.join(base, name)
            real = os.path.realpath(child)
            if real not in within:
                yield child, real


def _listing(folder: str) -> list[tuple[str, bool]]:
    """The names in ``folder``, sorted, each with whether it is a folder; none where it is not a folder or cannot be
    read (no match there, as glob has it)."""
    try:
        with os.scandir(folder) as entries:
            return sorted((entry.name, is_dir_quietly(entry)) for entry in entries)
    except OSError:
        return []


def _failed_source(path: Path, reason: str, argument: str) -> VideoSource:
    return VideoSource(path, error=reason, argument=argument)


def special_file_reason(path: Path) -> str | None:
    """Why ``path``, an existing path that is no folder, cannot be read as a video: a pipe (``mkfifo``, ``/dev/stdin``
    fed by a pipe) or a terminal, socket or character device is read once and waited on (opening a pipe waits for a
    writer: the run hung), where clipvis reads a video more than once (probe, model, overlay). None for a file (or
    a path it cannot look at: the reader says why)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode):
        kind = "a pipe"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    elif stat.S_ISCHR(mode):
        kind = "a terminal or device"
    else:
        return None
    return f"{kind}, not a file: clipvis reads a video more than once; save it to a file first"


def _expand_path(path: Path, argument: str, explicit: bool, warnings: list[str]) -> list[VideoSource]:
    if (reason := special_file_reason(path)) is not None:
        return [VideoSource(path, error=reason, argument=argument)]
    if path.is_dir():
        def search(directory: Path, visited: set[str], links: list[Path]) -> Iterator[VideoSource]:
            return _expand_directory(directory, argument, visited, links, warnings)

        found = sorted(search_tree(path, search), key=tree_order(path))
        return found or [_empty_folder(path, argument)]
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return [VideoSource(path, kind="images", frame_files=(path,), argument=argument)]
    if explicit or suffix in VIDEO_EXTENSIONS:
        return [VideoSource(path, kind="video", argument=argument)]
    return []


def _empty_folder(path: Path, argument: str) -> VideoSource:
    """The failed input of a folder whose search found nothing."""
    reason = ("directory holds no video files or image folders (images: "
              f"{', '.join(sorted(IMAGE_EXTENSIONS))}; videos: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    return VideoSource(path, error=reason, argument=argument)


def _expand_directory(
    directory: Path, argument: str, visited: set[str], links: list[Path], warnings: list[str]
) -> Iterator[VideoSource]:
    """The inputs in ``directory`` and below, symbolic links to folders left in ``links`` (`search_tree`)."""
    real = os.path.realpath(directory)
    if real in visited:  # reached at its real path already (`search_tree`), or a symbolic-link loop
        return
    visited.add(real)
    try:
        if is_image_folder(directory):
            frames = list_image_frames(directory)
            if (unread := unread_images_warning(directory)) is not None:
                warnings.append(unread)
            yield VideoSource(directory, kind="images", frame_files=tuple(frames), argument=argument)
            return
        entries = sorted(_visible_entries(directory), key=lambda p: natural_sort_key(p.name))
    except OSError as error:
        reason = f"cannot read directory ({error_reason(error)})"  # e.g. no permission to list it
        yield VideoSource(directory, error=reason, argument=argument)
        return
    loose = _images_not_processed(directory, entries)
    if loose is not None:
        warnings.append(loose)
    elif not any(entry.suffix.lower() in IMAGE_EXTENSIONS for entry in entries):  # a folder of .heic photos alone
        with contextlib.suppress(OSError):
            if (unread := unread_images_warning(directory, image_folder=False)) is not None:
                warnings.append(unread)
    for entry in entries:
        try:
            is_dir = entry.is_dir()
            is_video = not is_dir and entry.suffix.lower() in VIDEO_EXTENSIONS and entry.is_file()
            is_link = is_dir and entry.is_symlink()
        except OSError as error:
            yield VideoSource(entry, error=f"cannot read ({error_reason(error)})", argument=argument)
            continue
        if is_dir and _searched_within(entry):  # a folder clipvis made holds no input: its overlays are not inputs
            if is_link:
                links.append(entry)
            else:
                yield from _expand_directory(entry, argument, visited, links, warnings)
        elif is_video:
            yield VideoSource(entry, kind="video", argument=argument)


def _images_not_processed(directory: Path, entries: Sequence[Path]) -> str | None:
    """The warning for a folder that holds images beside a video or a sub-folder (not an image folder, so its images
    are no input), or None."""
    try:
        images = sum(1 for entry in entries if entry.suffix.lower() in IMAGE_EXTENSIONS and entry.is_file())
        if not images:
            return None
        videos = any(entry.suffix.lower() in VIDEO_EXTENSIONS and entry.is_file() for entry in entries)
        folders = any(entry.is_dir() and not _made_by_clipvis(entry) for entry in entries)
    except OSError:
        return None
    what = "a video" if videos else "a sub-folder" if folders else None
    if what is None:
        return None
    counted = f"its {images} images are" if images > 1 else "its image is"
    return (f"{path_text(directory)}: {counted} not processed: it holds {what} too (a folder of images is one video "
            "only when it holds no video and no sub-folder)")


def _made_by_clipvis(directory: Path) -> bool:
    """Whether a folder met while searching another for videos is one clipvis writes: it holds the lock file clipvis
    keeps in each (an output root, a video's output folder, an export folder, evaluate's cache), or it is a video's
    output folder copied without its hidden files (`_clipvis_manifest`)."""
    try:
        return (directory / LOCK_NAME).is_file() or _clipvis_manifest(directory / MANIFEST_NAME)
    except OSError:
        return False


def _searched_within(directory: Path) -> bool:
    """Whether a folder met while searching another is searched too: a folder of the user's, or an output root
    (clipvis' lock and its journal of the folders it made, `-o data/cam1`) that may hold the user's videos beside
    clipvis' folders, as an output root named at the top level is; not a video's output folder, an export folder or
    another folder clipvis made (evaluate's)."""
    if _output_folder_of(directory):
        return False
    try:  # a lock without a record of outputs: an output root when it keeps the journal, else another clipvis folder
        return not (directory / LOCK_NAME).is_file() or (directory / FOLDER_JOURNAL).is_file()
    except OSError:
        return False


# The fields every run.json clipvis writes holds (writers/manifest.py RunManifest): a run.json with all of them is
# clipvis' record of a video's output folder even where the folder's hidden lock was not copied (`rsync --exclude
# '.*'`); a file of another tool called run.json lacks them.
MANIFEST_FIELDS = frozenset({"manifest_version", "config_hash", "input", "stem", "outputs", "status"})
_MANIFEST_MAX_BYTES = 64 << 20  # a larger run.json is no clipvis record (and is not read whole to tell)


def _clipvis_manifest(path: Path) -> bool:
    """Whether ``path`` is a run.json clipvis wrote: a JSON object holding every one of MANIFEST_FIELDS."""
    import json

    try:
        if not path.is_file() or path.stat().st_size > _MANIFEST_MAX_BYTES:
            return False
        record = json.loads(path.read_bytes())
    except (OSError, ValueError):  # unreadable, not JSON, not UTF-8
        return False
    return isinstance(record, dict) and MANIFEST_FIELDS <= record.keys()


# How `discover_inputs` says it left out a file clipvis wrote (`warnings`).
SKIPPED_OUTPUT = "skipped: a file clipvis wrote"

# The records of the folders clipvis writes its outputs in: a video's output folder (writers.layout.MANIFEST_NAME)
# and an export folder (exporters/export_record.py). An output root holds neither (`-o .` keeps the user's own
# videos beside the video folders).
MANIFEST_NAME = "run.json"  # writers.layout.MANIFEST_NAME (which imports this module)
OUTPUT_FOLDER_RECORDS = (MANIFEST_NAME, ".clipvis-export.json")
FOLDER_JOURNAL = ".clipvis.folders"  # writers.layout.FOLDER_JOURNAL: an output root's journal of its folders


def _output_folder(path: Path) -> Path | None:
    """The folder of clipvis outputs a file lies in (directly, or one folder below: `png-masks/00001.png`), or None
    (`_output_folder_of`)."""
    for folder in (path.parent, path.parent.parent):
        if _output_folder_of(folder):
            return folder
    return None


def _output_folder_of(folder: Path) -> bool:
    """Whether ``folder`` is a folder of clipvis outputs (a video's output folder, an export folder): it holds
    clipvis' lock and a record of its outputs, or, copied without its hidden files, a run.json clipvis wrote."""
    try:
        if (folder / LOCK_NAME).is_file() and any((folder / name).is_file() for name in OUTPUT_FOLDER_RECORDS):
            return True
    except OSError:
        return False
    return _clipvis_manifest(folder / MANIFEST_NAME)


def is_dir_quietly(path: Path | os.DirEntry) -> bool:
    """``path.is_dir()``; False where the file system refuses to look (a name too long for it: ENAMETOOLONG)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def is_file_quietly(path: Path) -> bool:
    """``path.is_file()``; False where the file system refuses to look."""
    try:
        return path.is_file()
    except OSError:
        return False


def exists_quietly(path: Path) -> bool:
    """``path.exists()``; False where the file system refuses to look."""
    try:
        return path.exists()
    except OSError:
        return False


# Folders that file servers and archivers put beside people's files, never inputs: Synology's thumbnails and recycle
# bin, the resource forks of a zip made on macOS, Windows' recycle bin and volume data, ext4's lost+found.
SYSTEM_FOLDERS = frozenset({"@eaDir", "#recycle", "#snapshot", "__MACOSX", "$RECYCLE.BIN",
                            "System Volume Information", "lost+found"})


def _visible_entries(directory: Path) -> Iterable[Path]:
    """The entries of `directory` that can be inputs: not hidden (".name"), not a SYSTEM_FOLDERS folder."""
    return (entry for entry in directory.iterdir() if not skipped_name(entry.name))


def _deduplicate(sources: Iterable[InputT]) -> list[InputT]:
    seen: set[str] = set()
    unique: list[InputT] = []
    for source in sources:
        key = f"error:{source.argument}:{source.path}" if source.error else os.path.realpath(source.path)
        if key in seen:
            continue
        seen.add(key)
        unique.append(source)
    return unique


NAME_MAX_BYTES = 255  # NAME_MAX of ext4, XFS, btrfs, APFS, NTFS (in UTF-16 units there), ZFS


def safe_stem(name: str, max_bytes: int | None = None) -> str:
    """``name`` as one folder name inside an output root: no path separator (``/``, ``\\``), NUL or leading dot (so
    no ``..``), cut to ``max_bytes`` bytes of UTF-8 where given (a name from a file someone edited may be longer than
    a file system takes); "video" where nothing is left."""
    cleaned = path_text(name).replace("\x00", "_").replace("/", "_").replace("\\", "_").lstrip(".").strip()
    if max_bytes is not None and len(cleaned.encode("utf-8", "surrogateescape")) > max_bytes:
        cleaned = cleaned.encode("utf-8", "surrogateescape")[:max_bytes].decode("utf-8", "ignore").strip()
    return cleaned or "video"
