"""Run manifest (`run.json`): what produced a video's outputs, from which source, and whether that run completed.

`--skip-existing` uses it: an input is skipped when its run.json says "complete", was made with the same
weights, vocabulary and options (compared through `config_hash`; `segment` puts the checkpoint file's identity,
the resolved config's digest and the clipvis version among the options), from the same source file (path, size,
modification time), and every listed output is still there with the size it had when the run completed. The
"complete" manifest is written only after every output was fsync'ed and renamed into place. Pass as `options` only
the settings that change the results (stride, max frames, thresholds, formats, …), not flags such as --overwrite or
the log format.

The source's resolved path in `source["path"]` also says whose folder this is: `segment` never writes another
source's outputs into it (a second `clip.mp4` from elsewhere goes to `clip-2/`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from fractions import Fraction
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from clipvis.cli.atomic import atomic_write_json
from clipvis.cli.inputs import VideoSource
from clipvis.cli.iso_boxes import iso_top_level_boxes
from clipvis.cli.json_io import parse_json
from clipvis.cli.messages import path_text

MANIFEST_VERSION = 1
STATUS_RUNNING = "running"
STATUS_COMPLETE = "complete"
STATUS_FAILED = "failed"
STATUS_INTERRUPTED = "interrupted"

_VERSIONED_PACKAGES = (
    "clipvis", "torch", "open_clip_torch", "av", "numpy", "pycocotools", "opencv-python-headless",
    "opencv-python",
)


def config_hash(weights: str, vocabulary: Sequence[str], options: Mapping[str, Any]) -> str:
    """Stable SHA-256 of weights + vocabulary (order matters: it fixes category ids) + options."""
    canonical = json.dumps(
        {"weights": weights, "vocabulary": list(vocabulary), "options": dict(options)},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def source_owner(source: VideoSource | Path | str) -> str:
    """The source an output folder belongs to, as its run.json records it (``source.path`` in the fingerprint): the
    input's resolved path."""
    return path_text(os.path.realpath(source.path if isinstance(source, VideoSource) else Path(source)))


def source_fingerprint(source: VideoSource | Path | str) -> dict[str, Any]:
    """Identity of an input: resolved path, total size in bytes, newest modification time (ns), files.

    For an image folder the size and time are over its frame files, and ``frames`` is a digest of the frames' names
    and sizes in frame order: frames renamed or reordered (which keeps every modification time) are another input.
    Missing files count as size -1.
    """
    images = isinstance(source, VideoSource) and source.kind == "images"
    if isinstance(source, VideoSource):
        files = list(source.frame_files) if images else [source.path]
        path = source.path
    else:
        path = Path(source)
        files = [path]
    size = 0
    newest = 0
    order = hashlib.sha256()
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            return {"path": source_owner(path), "size": -1, "mtime_ns": 0, "files": len(files)}
        size += stat.st_size
        newest = max(newest, stat.st_mtime_ns)
        order.update(f"{path_text(file.name)}\0{stat.st_size}\n".encode())
    identity = {"path": source_owner(path), "size": size, "mtime_ns": newest, "files": len(files)}
    if images:
        identity["frames"] = order.hexdigest()
    return identity


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that affect results (without importing them)."""
    return dict(_installed_versions())


@functools.cache
def _installed_versions() -> tuple[tuple[str, str], ...]:
    """Read once per process: each lookup parses a package's metadata (~1 ms), and every input's run.json has them."""
    versions = [("python", platform.python_version())]
    for name in _VERSIONED_PACKAGES:
        try:
            versions.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return tuple(versions)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _timestamp_ns(text: object) -> int | None:
    """A run.json time (``finished_at``, to the second) as nanoseconds since the epoch, one second late (the files it
    lists were put in place within the second it names); None when it is not one."""
    try:
        return int((datetime.fromisoformat(str(text)).timestamp() + 1) * 1e9) if text else None
    except (ValueError, OverflowError):
        return None


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def looks_whole(path: Path) -> bool:
    """Whether a file clipvis wrote still looks whole, as a person's correction leaves it rather than damage: a JSON
    file ends as one (``}`` or ``]`` before trailing white space), a zip has its directory, an MP4's top-level boxes
    end with the file; any other file does."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".zip":
            return zipfile.is_zipfile(path)
        if suffix == ".json":
            with path.open("rb") as handle:
                handle.seek(max(0, path.stat().st_size - (1 << 20)))
                return handle.read().rstrip()[-1:] in (b"}", b"]")
        if suffix in (".mp4", ".mov", ".m4v"):
            return _boxes_end_with_file(path)
    except OSError:
        return False
    return True


def _boxes_end_with_file(path: Path) -> bool:
    """Whether an ISO media file's top-level boxes (ftyp, moov, mdat, ...) end exactly at its end: a copy cut short
    ends inside one."""
    size = path.stat().st_size
    return all(end is not None and end - offset >= 8 and end <= size for _, offset, end in iso_top_level_boxes(path))


@dataclass
class RunManifest:
    """Contents of run.json. Create with `RunManifest.start(...)`, then `mark_complete` / `mark_failed`
    and `write` (atomic) at each step, so an interrupted run never looks complete."""

    input: str
    stem: str
    weights: str
    vocabulary: list[str]
    options: dict[str, Any]
    config_hash: str
    source: dict[str, Any] = field(default_factory=dict)
    status: str = STATUS_RUNNING
    error: str | None = None
    frames: int | None = None
    # A pixel's width and height where the source's pixels are not square (anamorphic: [4, 3] for a 64x48 video
    # shown 85x48), else None: the masks, ytvis.json's and coco.json's sizes are the stored pixels', not as shown.
    pixel_aspect: list[int] | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)  # [{"file": name, "bytes": size, "mtime_ns": t}]
    stale: list[str] = field(default_factory=list)  # files of an earlier run not made by this one (not deleted)
    # --formats whose files this complete run could not write (too many tracks for png-masks' ids), each with why:
    # `options` records the formats it wrote, so a rerun with these --formats runs again (clipvis.cli.rerun says why)
    formats_not_written: dict[str, str] = field(default_factory=dict)
    # Files earlier clipvis runs wrote here that no complete run has settled since: a run that fails, is interrupted
    # or killed keeps them listed, so the next complete run still knows they are clipvis' (and deletes those it no
    # longer writes). Empty once a run completes.
    earlier_outputs: list[str] = field(default_factory=list)
    # Of `earlier_outputs`, the size and modification time each had when a clipvis run put it in place (where known):
    # a file changed since (corrected by hand) is never replaced or deleted (`changed_files`).
    earlier_stats: dict[str, list[list[int]]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    started_at: str = ""
    finished_at: str | None = None
    manifest_version: int = MANIFEST_VERSION

    # When the run.json this was read from was last written (`read`), not part of it: a complete run's is when its
    # files were in place, to the nanosecond (`changed_files`, for files an earlier version recorded by size alone).
    written_ns: ClassVar[int | None] = None

    @classmethod
    def start(
        cls,
        source: VideoSource | Path | str,
        stem: str,
        weights: str,
        vocabulary: Sequence[str],
        options: Mapping[str, Any],
    ) -> RunManifest:
        """A manifest with status "running" for an input about to be processed."""
        path = source.path if isinstance(source, VideoSource) else Path(source)
        return cls(
            input=path_text(path),
            stem=stem,
            weights=weights,
            vocabulary=list(vocabulary),
            options=dict(options),
            config_hash=config_hash(weights, vocabulary, options),
            source=source_fingerprint(source),
            versions=package_versions(),
            started_at=_now(),
        )

    @property
    def source_path(self) -> str | None:
        """The resolved path of the input this manifest's folder belongs to."""
        path = self.source.get("path") if isinstance(self.source, dict) else None
        return path if isinstance(path, str) else None

    @property
    def output_names(self) -> list[str]:
        """File names of the outputs (relative to the manifest's folder)."""
        return [str(entry["file"]) if isinstance(entry, dict) else str(entry) for entry in self.outputs
                if not isinstance(entry, dict) or isinstance(entry.get("file"), str)]  # a hand-made odd entry: none

    def written_stats(self) -> dict[str, list[list[int]]]:
        """Per file a clipvis run put in this folder, the ``[size, mtime_ns]`` it had then (``mtime_ns`` -1 where an
        earlier version recorded the size alone), one or more (a file about to be replaced when a run was killed
        between its renames is the earlier file or the new one): this run's outputs and the earlier ones it carries.
        Entries that are not numbers are left out."""
        stats: dict[str, list[list[int]]] = {}
        for name, value in self.earlier_stats.items():
            if not isinstance(value, list) or not value:
                continue
            pairs = value if isinstance(value[0], list) else [value]  # one pair, as first written
            kept = [[int(a), int(b)] for a, b in (p for p in pairs if isinstance(p, list) and len(p) == 2)
                    if _whole(a) and _whole(b)]
            if kept:
                stats[str(name)] = kept
        for entry in self.outputs:
            if isinstance(entry, dict) and isinstance(entry.get("file"), str) and _whole(entry.get("bytes")):
                mtime = entry.get("mtime_ns", -1)
                stats[str(entry.get("file"))] = [[int(entry["bytes"]), int(mtime) if _whole(mtime) else -1]]
        return stats

    def changed_files(self, directory: Path | str) -> list[str]:
        """The files of ``written_stats`` that are in ``directory`` otherwise than a clipvis run left them: another
        size or modification time (one recorded without its time: modified after the run finished), i.e. edited or
        replaced since. A missing one is not changed."""
        # when the run's files were in place: its run.json's own time as read (to the nanosecond), else the second
        # it names
        finished = (self.written_ns or _timestamp_ns(self.finished_at)) if self.status == STATUS_COMPLETE else None
        changed = []
        for name, pairs in sorted(self.written_stats().items()):
            try:
                status = (Path(directory) / name).stat()
            except OSError:
                continue
            now = [status.st_size, status.st_mtime_ns]
            if not any(now == pair or (pair[1] == -1 and now[0] == pair[0]
                                       and (finished is None or now[1] <= finished)) for pair in pairs):
                changed.append(name)
        return changed

    def corrected_files(self, directory: Path | str) -> set[str]:
        """The ``changed_files`` a person corrected: those that still look whole (`looks_whole`). One cut short (a
        full disk, an interrupted copy) is damage, written again."""
        return {name for name in self.changed_files(directory) if looks_whole(Path(directory) / name)}

    def current_stats(self, directory: Path | str, keep: set[str]) -> dict[str, list[list[int]]]:
        """``written_stats`` to carry into the next run's run.json: each file as it is now where it is as a clipvis
        run left it (an entry recorded without its time gets it), those in ``keep`` as recorded (corrected ones: a
        run killed before it settles them must not take them for clipvis')."""
        stats = self.written_stats()
        changed = set(self.changed_files(directory))
        for name in stats:
            if name in keep and any(mtime == -1 for _, mtime in stats[name]):
                stats[name] = [[-1, -1]]  # recorded by size alone, which a corrected file may keep: no file matches
            if name in keep or name in changed:
                continue
            try:
                status = (Path(directory) / name).stat()
            except OSError:
                continue
            stats[name] = [[status.st_size, status.st_mtime_ns]]
        return stats

    @property
    def clipvis_files(self) -> list[str]:
        """Every file name in the folder that a clipvis run wrote and no complete run settled since: this run's
        outputs and `earlier_outputs`."""
        return sorted(set(self.output_names) | {str(name) for name in self.earlier_outputs})

    def mark_complete(self, frames: int, outputs: Sequence[Path], timings: Mapping[str, float],
                      pixel_aspect: Fraction | None = None) -> None:
        """Record success. `outputs` are the files written (in the manifest's folder, already on disk and
        fsync'ed); their names and sizes are recorded. ``pixel_aspect``: the source's, where not square."""
        self.status = STATUS_COMPLETE
        self.error = None
        self.frames = frames
        square = pixel_aspect is None or pixel_aspect == 1
        self.pixel_aspect = None if square else [pixel_aspect.numerator, pixel_aspect.denominator]
        self.outputs = [{"file": Path(path).name, "bytes": status.st_size, "mtime_ns": status.st_mtime_ns}
                        for path, status in ((path, Path(path).stat()) for path in outputs)]
        self.earlier_outputs = []  # settled by this run (SegmentRunner deleted those it did not write again)
        self.earlier_stats = {}
        self.timings = {name: round(float(seconds), 4) for name, seconds in timings.items()}
        self.finished_at = _now()

    def mark_failed(self, error: str, status: str = STATUS_FAILED) -> None:
        """Record a failure (or `STATUS_INTERRUPTED`) with its one-line reason."""
        self.status = status
        self.error = error
        self.finished_at = _now()

    def write(self, path: Path | str) -> Path:
        return atomic_write_json(path, asdict(self), indent=2)

    @classmethod
    def read(cls, path: Path | str) -> RunManifest | None:
        """The manifest at `path`, or None if it is missing, unreadable or not a valid manifest. A field this version
        does not know (one a later clipvis added, as ``pixel_aspect`` was) is left aside, not taken for damage: going
        back to an earlier clipvis does not redo every complete input."""
        try:
            data = parse_json(Path(path).read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                return None
            known = {item.name for item in fields(cls)}
            manifest = cls(**{key: value for key, value in data.items() if key in known})
        except (OSError, ValueError, TypeError):
            return None
        if not isinstance(manifest.outputs, list) or not isinstance(manifest.source, dict) \
                or not isinstance(manifest.earlier_outputs, list) or not isinstance(manifest.earlier_stats, dict):
            return None
        if not isinstance(manifest.formats_not_written, dict):  # hand-edited: nothing said of them
            manifest.formats_not_written = {}
        try:
            manifest.written_ns = Path(path).stat().st_mtime_ns
        except OSError:
            pass
        return manifest

    def is_complete_for(
        self,
        weights: str,
        vocabulary: Sequence[str],
        options: Mapping[str, Any],
        source: VideoSource | Path | str | None = None,
        output_dir: Path | str | None = None,
    ) -> bool:
        """True if this run completed with the same weights/vocabulary/options (and, when given, the same
        unchanged source and with every listed output present in `output_dir` with its recorded size)."""
        if self.status != STATUS_COMPLETE:
            return False
        if self.config_hash != config_hash(weights, vocabulary, options):
            return False
        if source is not None:
            now = source_fingerprint(source)
            if "frames" not in self.source:  # recorded before frame order was part of an image folder's identity
                now.pop("frames", None)
            if self.source != now:
                return False
        if output_dir is not None:
            directory = Path(output_dir)
            for entry in self.outputs:
                if not isinstance(entry, dict) or not _has_size(directory / str(entry.get("file")), entry.get("bytes")):
                    return False
        return True


def _has_size(path: Path, size: object) -> bool:
    try:
        return path.is_file() and path.stat().st_size == size
    except OSError:
        return False
