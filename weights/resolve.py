"""Resolve a checkpoint name or path to a local file, downloading released checkpoints on first use.

* An existing path is used as given (a directory must hold exactly one recognisable checkpoint); a folder named like
  a release that holds no checkpoint at all (an empty folder, a results folder) does not hide that release.
* A released checkpoint name (see `weights.registry`) maps to ``<cache>/weights/<file name>``; a missing
  file is downloaded from Google Drive with gdown (with a network timeout) into a temporary folder next to
  it, checked (and verified by the caller's ``verify``, e.g. that it loads and has the expected keys), and
  moved into place atomically, so a file at the final path is always complete and checked.

Environment: ``CLIPVIS_CACHE`` (cache root; default ``$XDG_CACHE_HOME/clipvis`` when that is absolute, else
``~/.cache/clipvis``),
``CLIPVIS_OFFLINE=1`` (never download).
"""

from __future__ import annotations

import enum
import errno
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from clipvis.paths import NO_SUCH_FILE, missing_reason
from clipvis.weights.cache_files import (
    DownloadLock,
    failure_since,
    forget_failure,
    new_file_mode,
    new_folder_mode,
    read_failure_record,
    record_failure,
)
from clipvis.weights.download_report import DownloadReporter, active_reporter
from clipvis.weights.errors import (
    CacheLocationError,
    InvalidWeightsError,
    UnknownCheckpointError,
    WeightsNotAvailableError,
)
from clipvis.weights.registry import (
    PretrainedCheckpoint,
    find_pretrained,
    get_pretrained,
    list_pretrained,
    pretrained_names,
)
from clipvis.weights.training_folder import CHECKPOINT_FILE, FINAL_CHECKPOINT, STATE_SUFFIX, read_last_checkpoint

CACHE_ENV = "CLIPVIS_CACHE"
OFFLINE_ENV = "CLIPVIS_OFFLINE"
XDG_CACHE_ENV = "XDG_CACHE_HOME"

#: Endings of the checkpoint files clipvis reads (`clipvis.model.load_model`): detectron2's `.pth` (what the official
#: training writes) and `.pkl` (its converted weights), clipvis's `.safetensors`, plain `torch.save` files (`.pt`,
#: `.bin`) and Lightning's `.ckpt`. A folder given as weights is searched for files with one of them
#: (`_checkpoint_in_directory`); text with one that names no file is a path, not a mistyped release name (`_unknown`).
CHECKPOINT_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".pkl", ".bin", ".safetensors", ".ckpt")
# CLIPVIS_OFFLINE values that leave downloading on (README: nothing is downloaded while it is set: `y`, `2`,
# `enabled` downloaded, where a user meant the opposite).
_FALSY = frozenset({"", "0", "false", "no", "off", "n", "none", "disabled"})
_CAUSE_MAX_CHARS = 200
#: gdown (connect, between-bytes) timeout in seconds, so a stalled network fails instead of hanging.
#: gdown >= 6.3 (the first release with `timeout`) is a declared dependency.
DOWNLOAD_TIMEOUT_S = (30.0, 120.0)


def cache_dir() -> Path:
    """Root of the clipvis cache (weights, text embeddings): ``$CLIPVIS_CACHE`` if set and non-empty, else
    ``$XDG_CACHE_HOME/clipvis`` if that is an absolute path (a relative one is ignored, as the XDG specification
    says), else ``~/.cache/clipvis``. The one source of it; called only where the cache is needed.

    Raises `CacheLocationError` (one line, naming ``CLIPVIS_CACHE``) when it cannot be located: a ``~user`` of no
    such user, no home folder."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured:
        try:
            return Path(configured).expanduser().absolute()
        except RuntimeError as exc:  # "Could not determine home directory."
            raise CacheLocationError(
                f"cache folder {CACHE_ENV}={configured!r}: {configured.split('/')[0]} cannot be expanded (no such "
                f"user, or no home folder); set {CACHE_ENV} to a folder's path"
            ) from exc
    xdg = os.environ.get(XDG_CACHE_ENV, "").strip()
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "clipvis"
    try:
        return (Path.home() / ".cache" / "clipvis").absolute()
    except (RuntimeError, KeyError) as exc:
        raise CacheLocationError(
            f"cache folder: no home folder to keep it in (~/.cache/clipvis); set {CACHE_ENV} to a folder's path"
        ) from exc


def weights_cache_dir() -> Path:
    """Folder that holds downloaded released checkpoints: ``<cache>/weights``."""
    return cache_dir() / "weights"


def cache_path(name: str) -> Path:
    """Where the released checkpoint `name` is (or would be) cached; raises for an unknown name."""
    return weights_cache_dir() / get_pretrained(name).file_name


def released_name_of(name: str | os.PathLike[str]) -> str | None:
    """The registry name of a released checkpoint given by any of its accepted names (case, ``_``/``-``, its file
    name); None for anything else, paths included (see `release_named`)."""
    checkpoint = release_named(name)
    return checkpoint.name if checkpoint is not None else None


def release_named(name_or_path: str | os.PathLike[str]) -> PretrainedCheckpoint | None:
    """The released checkpoint `name_or_path` stands for, or None when it is a path or no release's name.

    A release's name (any accepted spelling, no ``/``) is the release unless a file of that name exists, or a folder
    of that name holds a checkpoint (a training run's folder): those are taken as the path. A folder holding no
    checkpoint (an empty one, ``segment -o clipvis-lvis-r50``'s results) does not hide the release."""
    text = os.fspath(name_or_path)
    checkpoint = find_pretrained(text) if _looks_like_a_name(text) else None
    if checkpoint is None:
        return None
    local = Path(text).expanduser()
    if local.is_dir():
        return None if _holds_a_checkpoint(local) else checkpoint
    return None if local.exists() else checkpoint


def offline_mode() -> bool:
    """True when ``CLIPVIS_OFFLINE`` is set, to anything but 0/false/no/off/n/none/disabled (or nothing): no
    download is ever attempted."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in _FALSY


class _FileKind(enum.Enum):
    TORCH = "a PyTorch checkpoint"
    HTML = "an HTML page"
    EMPTY = "an empty file"
    OTHER = "unrecognised bytes"


def _sniff(path: Path) -> _FileKind:
    """What the first bytes of `path` look like (raises OSError if it cannot be read)."""
    with path.open("rb") as handle:
        head = handle.read(512)
    if not head:
        return _FileKind.EMPTY
    # torch.save zip archives start with the zip magic, legacy torch pickles with the pickle PROTO opcode.
    if head.startswith((b"PK", b"\x80")):
        return _FileKind.TORCH
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head")) or b"<html" in text:
        return _FileKind.HTML
    return _FileKind.OTHER


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _one_line(text: str, max_chars: int | None = None) -> str:
    """`text` with all whitespace runs collapsed to one space, cut to `max_chars` (marked by " [...]")."""
    flat = " ".join(text.split())
    if max_chars is None or len(flat) <= max_chars:
        return flat
    return flat[:max_chars].rstrip() + " [...]"


def _checkpoint_in_directory(directory: Path) -> Path:
    """The checkpoint inside a directory (detectron2 output folders included), or a clear error."""
    named = read_last_checkpoint(directory)
    if named is not None:
        return named
    final = directory / FINAL_CHECKPOINT
    if final.is_file():
        return final
    try:
        candidates = sorted(entry for entry in directory.iterdir() if _is_candidate(entry))
    except OSError as exc:
        reason = _os_reason(exc)
        raise InvalidWeightsError(f"cannot read checkpoint directory {directory}: {reason}") from exc
    if len(candidates) == 1:
        return candidates[0]
    iterations = [CHECKPOINT_FILE.fullmatch(c.name) for c in candidates]
    if candidates and all(iterations):  # a clipvis training folder without its pointer: the newest iteration
        return max(zip(iterations, candidates, strict=True), key=lambda pair: int(pair[0].group(1)))[1]
    if not candidates:
        raise InvalidWeightsError(
            f"{directory} is a directory without a checkpoint (no {'/'.join(CHECKPOINT_SUFFIXES)} file); "
            "pass the checkpoint file itself"
        )
    shown = ", ".join(c.name for c in candidates[:5]) + (", ..." if len(candidates) > 5 else "")
    raise InvalidWeightsError(
        f"{directory} holds {len(candidates)} checkpoints ({shown}); pass the one to use"
    )


def _is_candidate(entry: Path) -> bool:
    """Whether a folder's entry is taken for a checkpoint when the folder is given (`_checkpoint_in_directory`)."""
    return (
        entry.suffix.lower() in CHECKPOINT_SUFFIXES
        and not entry.name.startswith(".")
        and not entry.name.endswith(STATE_SUFFIX)
        and entry.is_file()
    )


def _holds_a_checkpoint(directory: Path) -> bool:
    """Whether `directory` holds a file it would be resolved to (or chosen among); an unreadable one counts (its error
    is then said when it is resolved as a path)."""
    try:
        return any(_is_candidate(entry) for entry in directory.iterdir())
    except OSError:
        return True


def _checked_local_file(path: Path) -> Path:
    """`path` (or the checkpoint in it, for a directory) after checking it is a readable, non-empty file."""
    if path.is_dir():
        path = _checkpoint_in_directory(path)
    if not path.is_file():
        raise InvalidWeightsError(f"checkpoint {path} is not a regular file")
    try:
        kind = _sniff(path)
    except OSError as exc:
        raise InvalidWeightsError(f"cannot read checkpoint {path}: {_os_reason(exc)}") from exc
    if kind is _FileKind.EMPTY:
        raise InvalidWeightsError(f"checkpoint {path} is empty")
    if kind is _FileKind.HTML:
        raise InvalidWeightsError(
            f"checkpoint {path} is an HTML page, not a checkpoint (a failed Google Drive download?); "
            "delete it and download it again in a browser or with gdown"
        )
    return path.resolve()


def _not_available(
    checkpoint: PretrainedCheckpoint, target: Path, reason: str, remedy: str | None = None
) -> WeightsNotAvailableError:
    """The error for a released checkpoint that cannot be had: ``reason``, then ``remedy`` (default: download it by
    hand and save it in the cache), or give a file's path instead (worded by the error: `WeightsNotAvailableError`)."""
    return WeightsNotAvailableError(
        checkpoint=checkpoint.name, url=checkpoint.url, target=str(target), reason=_one_line(reason), remedy=remedy,
    )


def _cannot_write(checkpoint: PretrainedCheckpoint, target: Path, exc: OSError) -> WeightsNotAvailableError:
    """The error for a cache folder that cannot take the file (read-only, full, not ours): saving it there by hand
    would fail the same way, so the remedy is another cache folder."""
    if exc.errno in _FULL_ERRNOS:
        reason = f"the disk holding {target.parent} is full ({_os_reason(exc)})"
        remedy = f"Free some space there or set {CACHE_ENV} to a folder on a disk with room"
    else:
        reason = f"cannot write to {target.parent} ({_os_reason(exc)})"
        remedy = f"Set {CACHE_ENV} to a folder you can write to"
    return _not_available(
        checkpoint, target, reason, f"{remedy} (it is downloaded there), or download it by hand from {checkpoint.url}"
    )


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _disk_full(exc: BaseException) -> OSError | None:
    """The "no space left" (or quota) OSError behind `exc` (itself, or what it was raised from), else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    return None


def _download(
    checkpoint: PretrainedCheckpoint, target: Path, *, progress: bool, verify: Callable[[Path], object] | None
) -> Path:
    """Download `checkpoint` with gdown to a temporary folder beside `target`, check and verify it, move it in place.

    Nothing reaches `target` unless the file is a PyTorch checkpoint and `verify` (when given) accepts it. The
    download holds the file's `DownloadLock` until its staging folder is gone: the processes of a machine (torchrun's
    ranks, two shells) download a file once, the others wait for it (saying so once, with `progress`) and then take
    the file the first one verified; a staging folder found while nobody holds the lock is a killed download's. The
    lock dies with its process: a waiter never waits on a dead one.

    A download that fails records why beside the lock before it lets go of it (`record_failure`): a waiter finding a
    failure recorded during its wait fails at once with that reason, rather than each waiter trying again in turn (N
    processes and a stalled Google Drive took N times the timeout). A waiter whose download died without a record (a
    process killed, interrupted) downloads the file itself; a record older than the wait says nothing of it, and a
    process that did not wait never reads one: a later run tries again."""
    reporter = active_reporter() if progress else None
    lock = DownloadLock(target)
    waited = False
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _cannot_write(checkpoint, target, exc) from exc

        def say_waiting() -> None:
            nonlocal waited
            waited = True
            if reporter is not None:
                reporter.say(f"waiting for another process downloading {checkpoint.name} to {target}")

        before = read_failure_record(target)  # read before the lock is tried: any failure of the download waited for
        # is recorded after it (while that download holds the lock) and differs from it
        held = lock.acquire(exclusive=True, wait=True, on_wait=say_waiting)
        if held is None:  # no locking here
            if lock.unlocked_reason is not None:
                warnings.warn(
                    f"{lock.path}: cannot open this download lock ({lock.unlocked_reason}; another user's, made "
                    f"private by their umask?): {checkpoint.name} is downloaded without it, and another process may "
                    f"download it at the same time; its owner can allow it with chmod a+r {lock.path}",
                    RuntimeWarning, stacklevel=4,
                )
            _remove_abandoned_downloads(target.parent, (checkpoint.file_name,))
        else:  # no other download of it is in progress: what is staged is abandoned
            _remove_abandoned_downloads(target.parent, (checkpoint.file_name,), held=True)
            if _complete(target):  # another process downloaded (and verified) it meanwhile
                return target
            failure = failure_since(target, before) if waited else None
            if failure is not None:  # the download waited for failed: so would this one, after as long a wait
                reason = f"the download of it by another process (pid {failure.pid}), which this one waited for, " \
                         f"failed: {failure.reason}"
                raise _not_available(checkpoint, target, reason, failure.remedy)
        try:
            downloaded = _download_staged(checkpoint, target, reporter=reporter, verify=verify)
        except WeightsNotAvailableError as error:
            if held:  # recorded before the lock is let go: the processes waiting for it fail with this reason
                record_failure(target, error.reason or str(error), error.remedy)
            raise
        if held:
            forget_failure(target)
        return downloaded
    finally:
        if reporter is not None:  # a progress bar ends before the error, if any, is said
            reporter.close()
        lock.release()


def _complete(target: Path) -> bool:
    """Whether `target` is a file that looks like a checkpoint (only verified files are moved there)."""
    try:
        return target.is_file() and _sniff(target) in (_FileKind.TORCH, _FileKind.OTHER)
    except OSError:
        return False


def _download_staged(
    checkpoint: PretrainedCheckpoint, target: Path, *, reporter: DownloadReporter | None,
    verify: Callable[[Path], object] | None,
) -> Path:
    """`_download`'s work, in a staging folder ``.<file name>.XXXX/`` beside `target` (removed when done). gdown is
    quiet: what the download says (that it starts, its progress, read through gdown's callback) goes to `reporter`
    (None: nothing), and a failure is this function's one-line error alone."""
    try:
        staging = tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{checkpoint.file_name}.")
        # mkdtemp's folder is private (0700): with the usual mode, another user of a shared cache can remove it when
        # the download is killed (`_remove_abandoned_downloads`)
        os.chmod(staging.name, new_folder_mode())
    except OSError as exc:
        raise _cannot_write(checkpoint, target, exc) from exc
    with staging as folder:
        part = Path(folder) / checkpoint.file_name
        # the staging folder is removed when this ends: what is said of a failure names neither it nor what is in it
        try_again = _try_again(checkpoint, target)
        options: dict[str, Any] = {}
        if reporter is not None:
            reporter.say(f"downloading {checkpoint.name} from {checkpoint.url} to {target}")
            options["progress"] = lambda done, total: reporter.progress(checkpoint.name, done, total)
        try:
            import gdown  # imported here: it is only needed for a download

            # quiet: gdown's own lines ("Downloading...", a "To:" naming the staging folder, its progress bar) were
            # printed whatever the caller's format (JSON lines on stderr)
            result = gdown.download(
                id=checkpoint.gdrive_id, output=str(part), quiet=True, timeout=DOWNLOAD_TIMEOUT_S, **options
            )
        except Exception as exc:  # any failure means "not available"; the message shows the cause
            if _disk_full(exc) is not None:  # not Google Drive's fault: the cache's disk
                raise _cannot_write(checkpoint, target, _disk_full(exc)) from exc
            cause = _one_line(_without_staging(str(exc), Path(folder), part), _CAUSE_MAX_CHARS)
            reason = f"the download from Google Drive failed ({type(exc).__name__}{': ' if cause else ''}{cause})"
            raise _not_available(checkpoint, target, reason, try_again) from exc
        if result is None or not part.is_file():
            raise _not_available(checkpoint, target, "the download from Google Drive produced no file", try_again)
        try:
            kind = _sniff(part)
        except OSError as exc:
            reason = f"the downloaded file cannot be read ({_os_reason(exc)})"
            raise _not_available(checkpoint, target, reason, try_again) from exc
        if kind is not _FileKind.TORCH:
            reason = (
                f"Google Drive sent {kind.value} instead of a PyTorch checkpoint "
                "(download quota exceeded or access refused?)"
            )
            raise _not_available(checkpoint, target, reason, try_again)
        if verify is not None:
            try:
                verify(part)
            except Exception as exc:  # noqa: BLE001 - whatever the verifier objects to, the file stays out
                cause = _one_line(_without_staging(str(exc), Path(folder), part), _CAUSE_MAX_CHARS)
                reason = f"the downloaded file is not the expected checkpoint ({cause})"
                raise _not_available(checkpoint, target, reason, try_again) from exc
        try:
            # gdown writes through a NamedTemporaryFile (0600) and the staging folder is private (0700): the cached
            # file gets the mode open() would give it, so the other users of a shared cache can read it
            os.chmod(part, new_file_mode())
            os.replace(part, target)
        except OSError as exc:
            raise _cannot_write(checkpoint, target, exc) from exc
    return target


def _try_again(checkpoint: PretrainedCheckpoint, target: Path) -> str:
    """What to do after a download that failed or was cut short: nothing of it is kept (its staging folder is gone),
    so a new try starts from the first byte; or the file by hand, saved where the cache looks for it."""
    return (
        "Try again (a new download starts from the beginning: nothing of this one is kept), or download it by hand "
        f"from {checkpoint.url} and save it as {target}"
    )


def _without_staging(text: str, staging: Path, part: Path) -> str:
    """`text` (what gdown or the verifier said of a failed download) on one line, without the staging folder, which
    is removed as the download ends: ``<part>: problem`` is said as ``problem`` (of the downloaded file), another
    mention of `part` as "the downloaded file", and a sentence naming anything else in the folder (gdown's "The
    received bytes are kept in <folder>/<file>.part, which resume picks up") is left out."""
    flat = _one_line(text).replace(f"{part}: ", "")
    # the file itself, not a name it begins (gdown's partial file <part>XXXXXXXX.part)
    flat = re.sub(rf"(['\"]?){re.escape(str(part))}(?![\w.-])\1", "the downloaded file", flat)
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", flat)
    return " ".join(sentence for sentence in sentences if str(staging) not in sentence)


#: Where staging folders cannot be told abandoned by their lock (a file system without `flock`, a cache that cannot
#: be written), one untouched this long belongs to a process that was killed (a live download writes to it every few
#: seconds).
ABANDONED_DOWNLOAD_S = 3600.0


def _remove_abandoned_downloads(folder: Path, file_names: Iterable[str], *, held: bool = False) -> None:
    """Delete the staging folders (``.<file name>.XXXX/``, each up to a whole checkpoint) of downloads whose process
    was killed (SIGKILL, a power cut: no cleanup ran): those of a file whose `DownloadLock` nobody holds (`held`: the
    caller holds it, exclusively); where locking is not possible, those untouched for `ABANDONED_DOWNLOAD_S`. Costs
    one listing of `folder` when there are none. Never raises."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for file_name in file_names:
        staged = [folder / name for name in names if name.startswith(f".{file_name}.")]
        staged = [path for path in staged if path.is_dir() and not path.is_symlink()]
        if not staged:
            continue
        lock = DownloadLock(folder / file_name)
        try:
            state = True if held else lock.acquire(exclusive=True, wait=False)
            if state is False:  # a download of it is in progress (its folder is one of these)
                continue
            cutoff = time.time() - ABANDONED_DOWNLOAD_S
            for staging in staged:
                try:
                    if state is None and _last_written(staging) >= cutoff:
                        continue
                    shutil.rmtree(staging)
                except OSError:  # another process removed it meanwhile, or another user's files: leave it
                    continue
        finally:
            lock.release()


def _last_written(folder: Path) -> float:
    return max([folder.stat().st_mtime, *(entry.stat().st_mtime for entry in folder.iterdir())])


def _looks_like_a_name(text: str) -> bool:
    return bool(text) and "/" not in text and os.sep not in text and not text.startswith(("~", "."))


def _unknown(text: str) -> UnknownCheckpointError:
    """The error for text that is no file, folder or release: a URL (not downloaded; a release's Google Drive link
    names the release and where to save its file), a path (``no such file``), else a name, with the released ones
    and the closest ("did you mean")."""
    if re.match(r"(?i)https?://", text):
        release = next((c for c in list_pretrained() if c.gdrive_id in text), None)
        if release is None:
            return UnknownCheckpointError(f"{text}: clipvis does not download URLs; download the file and give its "
                                          "path")
        return UnknownCheckpointError(
            f"{text}: clipvis does not download URLs; this is the Google Drive file of the released checkpoint "
            f"{release.name}: give that name (downloaded into the cache), or save the file as "
            f"{weights_cache_dir() / release.file_name} and give that name or the file's path"
        )
    names = ", ".join(pretrained_names())
    if not text.strip():
        return UnknownCheckpointError(f"{EMPTY_CHECKPOINT_NAME}: give a checkpoint file, a training folder or a "
                                      f"released checkpoint's name ({names})")
    if text.lower().endswith(CHECKPOINT_SUFFIXES):
        stem = text[: text.rindex(".")]  # a release's name with a file's ending (or its file's name), not a path
        guesses = _closest_releases(stem) if _looks_like_a_name(stem) else []
        return UnknownCheckpointError(f"no such file: {text}{_did_you_mean(guesses, ' (a released checkpoint)')}")
    if not _looks_like_a_name(text):  # a checkpoint file or a training folder
        return UnknownCheckpointError(f"no such file or folder: {text}")
    return UnknownCheckpointError(
        f"{text!r} is neither an existing checkpoint file nor a released checkpoint name "
        f"({names}){_did_you_mean(_closest_releases(text))}"
    )


#: How an empty checkpoint name or path starts its error (a command words it as its flag: "--weights is empty")
EMPTY_CHECKPOINT_NAME = "the checkpoint name or path is empty"


def _did_you_mean(guesses: list[str], what: str = "") -> str:
    if not guesses:
        return ""
    return f"; did you mean {' or '.join(guesses)}{what}?"


def _closest_releases(text: str) -> list[str]:
    """The released checkpoints whose name (or file name) ``text`` most nearly spells, best first; several when they
    fit equally well. A release must fit the words of ``text`` that tell the releases apart (``ytvis`` in
    ``clipvis-ytvis-r50`` is clipvis-coco-ytvis19-r50's, not clipvis-lvis-r50's, however alike the spellings), or,
    failing that, be spelt nearly alike (difflib)."""
    import difflib

    def words(name: str) -> list[str]:
        return [word for word in re.split(r"[-_.\s]+", name.lower()) if word]

    def alike(word: str, other: str) -> bool:  # a word as given, shortened, or with a letter or two wrong
        return other.startswith(word) or difflib.SequenceMatcher(None, word, other).ratio() >= 0.75

    releases = list_pretrained()
    spellings = [(c.name, words(c.name)) for c in releases] + [(c.name, words(Path(c.file_name).stem))
                                                                for c in releases]
    common = set.intersection(*(set(spelt) for _, spelt in spellings)) if spellings else set()
    given = [word for word in words(text) if word not in common]
    scores: dict[str, tuple[int, float]] = {}
    for name, spelt in spellings:
        fitting = sum(any(alike(word, other) for other in spelt) for word in given)
        ratio = difflib.SequenceMatcher(None, "-".join(words(text)), "-".join(spelt)).ratio()
        if (given and fitting == len(given)) or ratio >= 0.75:
            scores[name] = max(scores.get(name, (0, 0.0)), (fitting, ratio))
    if not scores:
        return []
    best = max(fitting for fitting, _ in scores.values())
    ranked = sorted((name for name, (fitting, _) in scores.items() if fitting == best), key=lambda n: -scores[n][1])
    if len(ranked) > 1 and scores[ranked[0]][1] - scores[ranked[1]][1] >= 0.1:
        return ranked[:1]  # one plainly nearer in spelling
    return ranked


def resolve_weights(
    name_or_path: str | os.PathLike[str],
    *,
    download: bool = True,
    progress: bool = True,
    verify: Callable[[Path], object] | None = None,
) -> Path:
    """The local checkpoint file for a path or a released checkpoint name.

    * An existing file is returned as is (absolute); an existing directory must hold one checkpoint
      (``last_checkpoint``/``model_final.pth`` of a clipvis or detectron2 training folder are honoured, else the
      highest ``model_XXXXXXX`` iteration). Unreadable, empty or HTML
      files raise `InvalidWeightsError`. A folder named like a release that holds no checkpoint file (an empty
      folder, results) is no path: the name is the release's (`release_named`).
    * A released checkpoint name returns ``<cache>/weights/<file name>``, downloading it first when it is
      missing (unless `download` is False or ``CLIPVIS_OFFLINE`` is set). When it cannot be had, raises
      `WeightsNotAvailableError` whose message gives the manual download link and the exact target path.
    * Anything else raises `UnknownCheckpointError` listing the released names.

    `progress`: a download says that it starts (the release, its Google Drive page, the file in the cache), that it
    waits for another process' download of the file, and how far it got, through the reporter installed with
    `clipvis.weights.download_report.download_reporter` (the commands' lines or JSON events), else on stderr (the
    progress as a bar on a terminal, else a line a minute); gdown itself prints nothing. `verify(path)` is called
    on a freshly downloaded file before it is moved into the cache; if it raises, the file is discarded
    (`clipvis.model.load_model` passes a check that the file loads and has the registry entry's keys).
    """
    text = os.fspath(name_or_path)
    checkpoint = release_named(text)
    if checkpoint is None:
        candidate = Path(text).expanduser()
        if text and candidate.exists():
            return _checked_local_file(candidate)
        if text and (reason := missing_reason(candidate)) != NO_SUCH_FILE:  # a path, to nothing
            raise UnknownCheckpointError(f"{text!r} is a {reason}, not a checkpoint file")
        raise _unknown(text)

    target = weights_cache_dir() / checkpoint.file_name
    if target.is_file():
        try:
            kind = _sniff(target)
        except OSError as exc:
            reason = _os_reason(exc)
            raise InvalidWeightsError(f"cannot read cached checkpoint {target}: {reason}") from exc
        if kind in (_FileKind.TORCH, _FileKind.OTHER):
            # what killed downloads left beside it is removed here too, not only by the next download (which a cached
            # release never needs)
            _remove_abandoned_downloads(target.parent, [c.file_name for c in list_pretrained()])
            return target
        stale = f"its cached file {target} is {kind.value}, not a checkpoint"
        by_hand = f"delete that file, download the checkpoint by hand from {checkpoint.url} and save it there"
        if offline_mode():
            raise _not_available(checkpoint, target, f"{stale}, and it is not downloaded again while {OFFLINE_ENV} is "
                                 "set", f"Unset {OFFLINE_ENV} to download it again, or {by_hand}")
        if not download:
            raise _not_available(checkpoint, target, f"{stale}, and downloading is disabled",
                                 by_hand[0].upper() + by_hand[1:])
        return _download(checkpoint, target, progress=progress, verify=verify)

    if offline_mode():
        raise _not_available(checkpoint, target, f"it is not in the cache and {OFFLINE_ENV} is set")
    if not download:
        raise _not_available(checkpoint, target, "it is not in the cache and downloading is disabled")
    return _download(checkpoint, target, progress=progress, verify=verify)
