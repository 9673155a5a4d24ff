"""Resolving a checkpoint name or path to a local file; downloads are always faked (no network)."""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gdown
import pytest

from clipvis.weights import (
    InvalidWeightsError,
    UnknownCheckpointError,
    WeightsNotAvailableError,
    cache_dir,
    cache_path,
    get_pretrained,
    pretrained_names,
    resolve_weights,
    weights_cache_dir,
)

TORCH_ZIP_BYTES = b"PK\x03\x04" + bytes(range(60))
LEGACY_PICKLE_BYTES = b"\x80\x02" + bytes(range(60))
HTML_BYTES = b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head></html>"


class FakeGdown:
    """Stands in for `gdown.download`: records calls and does what the test asks."""

    def __init__(self, behaviour: Callable[[Path], Any]) -> None:
        self.behaviour = behaviour
        self.calls: list[dict[str, Any]] = []

    def __call__(self, *, id: str, output: str, quiet: bool, **kwargs: Any) -> Any:
        self.calls.append({"id": id, "output": output, "quiet": quiet, **kwargs})
        return self.behaviour(Path(output))


def _writes(data: bytes) -> Callable[[Path], str]:
    def behaviour(output: Path) -> str:
        output.write_bytes(data)
        return str(output)

    return behaviour


def _raises(exc: Exception) -> Callable[[Path], str]:
    def behaviour(output: Path) -> str:
        raise exc

    return behaviour


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Cache in tmp_path, offline flag cleared, and a gdown that fails loudly if a test forgets to fake it."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CLIPVIS_CACHE", str(cache))
    monkeypatch.delenv("CLIPVIS_OFFLINE", raising=False)
    monkeypatch.setattr(gdown, "download", FakeGdown(_raises(AssertionError("network must not be used"))))
    return cache


def _leftovers(folder: Path) -> list[str]:
    """What is in `folder` but the download locks (empty files that stay, as clipvis' output folder locks do) and the
    records of failed downloads (a line of JSON each, read by the processes that waited for that download)."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if not (p.name.endswith(".lock") and p.stat().st_size == 0)
                  and not p.name.endswith(".failed.json"))


def _install_fake(monkeypatch: pytest.MonkeyPatch, behaviour: Callable[[Path], Any]) -> FakeGdown:
    fake = FakeGdown(behaviour)
    monkeypatch.setattr(gdown, "download", fake)
    return fake


# --- cache location -------------------------------------------------------------------------------


def test_cache_dir_from_environment(isolated_cache: Path) -> None:
    assert cache_dir() == isolated_cache
    assert weights_cache_dir() == isolated_cache / "weights"
    assert cache_path("clipvis-lvis-r50") == isolated_cache / "weights" / "clipvis_lvis_r50_7.pth"


def test_cache_dir_default_is_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLIPVIS_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "clipvis"


def test_cache_dir_honours_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLIPVIS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "clipvis"
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "mine"))  # the clipvis variable wins
    assert cache_dir() == tmp_path / "mine"


def test_a_relative_xdg_cache_home_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative XDG_CACHE_HOME made one cache per working folder; the XDG specification says to ignore it."""
    monkeypatch.delenv("CLIPVIS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    for relative in (".cache", "~/.cache"):
        monkeypatch.setenv("XDG_CACHE_HOME", relative)
        assert cache_dir() == tmp_path / "home" / ".cache" / "clipvis"


def test_a_cache_that_cannot_be_located_fails_only_what_needs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CLIPVIS_CACHE='~nosuchuser/x' failed a run of a local checkpoint file (no cache needed) with "Could not
    determine home directory"; only what needs the cache fails, with one line naming CLIPVIS_CACHE."""
    from clipvis.weights import CacheLocationError, WeightsError

    monkeypatch.setenv("CLIPVIS_CACHE", "~nosuchuser-clipvis-test/x")
    checkpoint = tmp_path / "mine.pth"
    checkpoint.write_bytes(TORCH_ZIP_BYTES)
    assert resolve_weights(checkpoint) == checkpoint.resolve()
    for needs_the_cache in (cache_dir, lambda: resolve_weights("clipvis-lvis-r50")):
        with pytest.raises(CacheLocationError) as excinfo:
            needs_the_cache()
        assert isinstance(excinfo.value, WeightsError)
        assert str(excinfo.value) == "cache folder CLIPVIS_CACHE='~nosuchuser-clipvis-test/x': " \
            "~nosuchuser-clipvis-test cannot be expanded (no such user, or no home folder); set CLIPVIS_CACHE to a " \
            "folder's path"


def test_text_embedding_cache_uses_the_same_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model) -> None:
    from clipvis.model.text_classifier import TextClassifier

    monkeypatch.delenv("CLIPVIS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert TextClassifier(tiny_model.backbone).cache_dir == tmp_path / "xdg" / "clipvis" / "text_embeddings"


# --- explicit paths ------------------------------------------------------------------------------


@pytest.mark.parametrize("as_path", [False, True])
def test_existing_file_is_returned(tmp_path: Path, as_path: bool) -> None:
    checkpoint = tmp_path / "my model.pth"
    checkpoint.write_bytes(TORCH_ZIP_BYTES)
    given = checkpoint if as_path else str(checkpoint)
    assert resolve_weights(given) == checkpoint.resolve()


def test_home_relative_path_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "ckpt.pth").write_bytes(LEGACY_PICKLE_BYTES)
    assert resolve_weights("~/ckpt.pth") == (tmp_path / "ckpt.pth").resolve()


def test_existing_path_wins_over_registry_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clipvis_lvis_r50_7.pth").write_bytes(TORCH_ZIP_BYTES)
    assert resolve_weights("clipvis_lvis_r50_7.pth") == (tmp_path / "clipvis_lvis_r50_7.pth").resolve()


def test_a_folder_named_like_a_release_without_a_checkpoint_does_not_hide_it(
    tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`segment -o clipvis-lvis-r50` made that folder before loading the default weights, and the resolver took any
    existing path first: "clipvis-lvis-r50 is a directory without a checkpoint", every time. An empty or foreign
    folder is no checkpoint: the name stays the release's; a folder holding a checkpoint (a training run's) is the
    path."""
    from clipvis.weights import release_named, released_name_of

    monkeypatch.chdir(tmp_path)
    target = isolated_cache / "weights" / "clipvis_lvis_r50_7.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(TORCH_ZIP_BYTES)
    (tmp_path / "clipvis-lvis-r50").mkdir()
    (tmp_path / "clipvis_lvis_r50").mkdir()
    (tmp_path / "clipvis_lvis_r50" / "results.json").write_text("[]")
    for spelling in ("clipvis-lvis-r50", "clipvis_lvis_r50"):
        assert resolve_weights(spelling) == target
        assert released_name_of(spelling) == "clipvis-lvis-r50"
    run = tmp_path / "clipvis-lvis-r50"
    (run / "model_0000999.pth").write_bytes(TORCH_ZIP_BYTES)
    assert resolve_weights("clipvis-lvis-r50") == (run / "model_0000999.pth").resolve()
    assert release_named("clipvis-lvis-r50") is None and released_name_of("clipvis-lvis-r50") is None
    assert release_named("./clipvis_lvis_r50") is None  # a path, however empty the folder
    assert gdown.download.calls == []  # type: ignore[attr-defined]


def test_directory_with_one_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "weights.pth").write_bytes(TORCH_ZIP_BYTES)
    assert resolve_weights(tmp_path) == (tmp_path / "weights.pth").resolve()


def test_detectron2_output_directory_uses_last_checkpoint(tmp_path: Path) -> None:
    for name in ("model_0009999.pth", "model_0019999.pth", "model_final.pth"):
        (tmp_path / name).write_bytes(TORCH_ZIP_BYTES)
    (tmp_path / "last_checkpoint").write_text("model_0019999.pth")
    assert resolve_weights(tmp_path) == (tmp_path / "model_0019999.pth").resolve()
    (tmp_path / "last_checkpoint").unlink()
    assert resolve_weights(tmp_path) == (tmp_path / "model_final.pth").resolve()


def test_clipvis_training_folder_without_pointer_uses_the_newest_iteration(tmp_path: Path) -> None:
    for name in ("model_0000999.safetensors", "model_0001999.safetensors"):
        (tmp_path / name).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
        (tmp_path / name.replace(".safetensors", ".state.pt")).write_bytes(TORCH_ZIP_BYTES)
    assert resolve_weights(tmp_path) == (tmp_path / "model_0001999.safetensors").resolve()
    (tmp_path / "last_checkpoint").write_text("model_0000999.safetensors")
    assert resolve_weights(tmp_path) == (tmp_path / "model_0000999.safetensors").resolve()
    (tmp_path / "last_checkpoint").write_bytes(b"\xff\xfe")  # not text (a damaged file): no pointer
    assert resolve_weights(tmp_path) == (tmp_path / "model_0001999.safetensors").resolve()


def test_directory_without_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(InvalidWeightsError, match="directory without a checkpoint") as excinfo:
        resolve_weights(tmp_path)
    assert str(tmp_path) in str(excinfo.value)


@pytest.mark.parametrize("name", ["model_0004999.pkl", "epoch=1-step=500.ckpt"])
def test_a_folder_holding_one_pkl_or_ckpt_checkpoint_resolves_to_it(tmp_path: Path, name: str) -> None:
    """A folder holding only detectron2's converted ``.pkl`` weights was refused as 'a directory without a checkpoint'
    although the file itself loads (a second suffix tuple, for unknown names, shadowed the folder's); a folder is
    searched for every ending the loader reads, Lightning's ``.ckpt`` included."""
    (tmp_path / name).write_bytes(LEGACY_PICKLE_BYTES)
    assert resolve_weights(tmp_path) == (tmp_path / name).resolve()


def test_a_folder_with_a_pth_and_a_ckpt_names_both(tmp_path: Path) -> None:
    """Two checkpoints in different formats are not guessed between: the error names both."""
    (tmp_path / "best.pth").write_bytes(TORCH_ZIP_BYTES)
    (tmp_path / "last.ckpt").write_bytes(TORCH_ZIP_BYTES)
    with pytest.raises(InvalidWeightsError, match=r"holds 2 checkpoints \(best.pth, last.ckpt\)"):
        resolve_weights(tmp_path)


def test_a_folder_without_a_checkpoint_names_every_ending_searched(tmp_path: Path) -> None:
    with pytest.raises(InvalidWeightsError, match=r"no \.pth/\.pt/\.pkl/\.bin/\.safetensors/\.ckpt file"):
        resolve_weights(tmp_path)


def test_directory_with_several_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "a.pth").write_bytes(TORCH_ZIP_BYTES)
    (tmp_path / "b.pt").write_bytes(TORCH_ZIP_BYTES)
    with pytest.raises(InvalidWeightsError, match="a.pth, b.pt"):
        resolve_weights(tmp_path)


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(InvalidWeightsError, match="empty"):
        resolve_weights(tmp_path / "empty.pth")


def test_html_saved_as_checkpoint_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "clipvis.pth").write_bytes(HTML_BYTES)
    with pytest.raises(InvalidWeightsError, match="HTML page"):
        resolve_weights(tmp_path / "clipvis.pth")


def test_unreadable_file_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked.pth"
    locked.write_bytes(TORCH_ZIP_BYTES)
    original_open = Path.open

    def refusing_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return original_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing_open)
    with pytest.raises(InvalidWeightsError, match="cannot read checkpoint .*locked.pth: Permission denied"):
        resolve_weights(locked)


# --- names that are neither ----------------------------------------------------------------------


def test_unknown_name_lists_registry_names() -> None:
    with pytest.raises(UnknownCheckpointError) as excinfo:
        resolve_weights("clipvis-lvis-swin")
    message = str(excinfo.value)
    assert "clipvis-lvis-swin" in message
    assert all(name in message for name in pretrained_names())


def test_missing_path_is_not_mistaken_for_a_name(tmp_path: Path) -> None:
    """A path to nothing was "neither an existing checkpoint file nor a released checkpoint name (...)"."""
    fake = gdown.download
    missing = tmp_path / "missing" / "clipvis_lvis_r50_7.pth"
    with pytest.raises(UnknownCheckpointError, match=f"^no such file: {re.escape(str(missing))}$"):
        resolve_weights(missing)
    for text in ("w2.safetensors", "~/no-such-clipvis-weights.pth", "model.pt", "model_final.pkl", "last.ckpt"):
        with pytest.raises(UnknownCheckpointError, match=f"^no such file: {re.escape(text)}$"):
            resolve_weights(text)
    for text in ("runs/frist", "~/no-such-run"):  # a checkpoint file or a training folder
        with pytest.raises(UnknownCheckpointError, match=f"^no such file or folder: {re.escape(text)}$"):
            resolve_weights(text)
    assert fake.calls == []  # type: ignore[attr-defined]


def test_a_url_is_not_downloaded_and_a_releases_drive_link_names_the_release(isolated_cache: Path) -> None:
    fake = gdown.download
    release = get_pretrained("clipvis-lvis-r50")
    with pytest.raises(UnknownCheckpointError) as excinfo:
        resolve_weights(release.url)
    assert str(excinfo.value) == (
        f"{release.url}: clipvis does not download URLs; this is the Google Drive file of the released checkpoint "
        f"clipvis-lvis-r50: give that name (downloaded into the cache), or save the file as "
        f"{isolated_cache / 'weights' / release.file_name} and give that name or the file's path")
    with pytest.raises(UnknownCheckpointError, match=r"^https://example.com/w.pth: clipvis does not download URLs; "
                                                     r"download the file and give its path$"):
        resolve_weights("https://example.com/w.pth")
    assert fake.calls == []  # type: ignore[attr-defined]


def test_a_near_miss_name_says_which_release_was_meant() -> None:
    for typed, meant in (("clipvis-lvis-r5", "clipvis-lvis-r50"), ("clipvis-lvis-50", "clipvis-lvis-r50"),
                         ("CLIPVIS_COCO_YTVIS_R50", "clipvis-coco-ytvis19-r50")):
        with pytest.raises(UnknownCheckpointError, match=f"did you mean {meant}\\?"):
            resolve_weights(typed)
    with pytest.raises(UnknownCheckpointError) as excinfo:
        resolve_weights("resnet")
    assert "did you mean" not in str(excinfo.value)


def test_a_near_miss_name_is_taken_for_the_release_its_distinctive_word_names() -> None:
    """'clipvis-ytvis-r50' was taken for clipvis-lvis-r50 (nearest in spelling), though only
    clipvis-coco-ytvis19-r50 is a YouTube-VIS model."""
    with pytest.raises(UnknownCheckpointError, match="did you mean clipvis-coco-ytvis19-r50\\?$"):
        resolve_weights("clipvis-ytvis-r50")


def test_a_release_name_with_a_checkpoint_ending_says_which_release_was_meant(tmp_path: Path, monkeypatch) -> None:
    """'clipvis-lvis-r50.pth' (the release's name with a file's ending, a likely slip) said only "no such file"."""
    monkeypatch.chdir(tmp_path)
    for typed, meant in (("clipvis-lvis-r50.pth", "clipvis-lvis-r50"), ("clipvis_lvis_r50.pt", "clipvis-lvis-r50"),
                         ("clipvis-ytvis-r50.safetensors", "clipvis-coco-ytvis19-r50")):
        with pytest.raises(UnknownCheckpointError) as excinfo:
            resolve_weights(typed)
        assert str(excinfo.value) == f"no such file: {typed}; did you mean {meant} (a released checkpoint)?"


def test_an_empty_name_is_said_to_be_empty() -> None:
    """'' said "no such file or folder: " with nothing after it."""
    for typed in ("", " "):
        with pytest.raises(UnknownCheckpointError, match="^the checkpoint name or path is empty: give a checkpoint "
                                                         "file, a training folder or a released checkpoint's name"):
            resolve_weights(typed)


def test_a_symbolic_link_to_nothing_is_said_to_be_one(tmp_path: Path) -> None:
    """A symbolic-link loop or a broken link was "neither an existing checkpoint file nor a released checkpoint
    name", as if the path were a mistyped name."""
    loop, broken = tmp_path / "loop.pth", tmp_path / "broken.pth"
    loop.symlink_to(loop.name)
    broken.symlink_to(tmp_path / "nowhere.pth")
    with pytest.raises(UnknownCheckpointError, match=r"loop\.pth' is a symbolic-link loop, not a checkpoint"):
        resolve_weights(loop)
    with pytest.raises(UnknownCheckpointError, match=r"broken\.pth' is a broken symbolic link, not a checkpoint file$"):
        resolve_weights(broken)


# --- released checkpoints: cache ------------------------------------------------------------------


def test_cached_checkpoint_is_used_without_download(isolated_cache: Path) -> None:
    target = isolated_cache / "weights" / "clipvis_coco_ytvis19_r50_10.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(TORCH_ZIP_BYTES)
    assert resolve_weights("clipvis-coco-ytvis19-r50") == target
    assert resolve_weights("clipvis-coco-ytvis19-r50", download=False) == target
    assert gdown.download.calls == []  # type: ignore[attr-defined]


# --- released checkpoints: download ---------------------------------------------------------------


def test_download_writes_checkpoint_atomically(isolated_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = isolated_cache / "weights" / "clipvis_lvis_convnext_b_7.pth"

    def download_while_target_absent(output: Path) -> str:
        assert not target.exists()  # nothing at the final path until the file is complete and checked
        assert output.parent.parent == target.parent  # staged beside the target (same file system)
        output.write_bytes(TORCH_ZIP_BYTES)
        return str(output)

    fake = _install_fake(monkeypatch, download_while_target_absent)
    assert resolve_weights("clipvis-lvis-convnext-b", progress=False) == target
    assert target.read_bytes() == TORCH_ZIP_BYTES
    assert _leftovers(target.parent) == [target.name]  # no temporary leftovers
    assert len(fake.calls) == 1
    assert fake.calls[0]["id"] == get_pretrained("clipvis-lvis-convnext-b").gdrive_id
    assert fake.calls[0]["quiet"] is True


def _stage(weights: Path, suffix: str, file_name: str = "clipvis_lvis_r50_7.pth") -> Path:
    """A staging folder as a download leaves it, holding a partial file."""
    folder = weights / f".{file_name}.{suffix}"
    folder.mkdir(parents=True)
    (folder / file_name).write_bytes(b"partial")
    return folder


def test_a_killed_downloads_staging_folder_is_removed_by_the_next_download(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download killed outright (SIGKILL: no cleanup) left up to a whole checkpoint in a hidden folder; the next
    download of that checkpoint removes it at once: nobody holds that file's download lock (a download in progress
    would: the next one waits for it, see below)."""
    weights = isolated_cache / "weights"
    abandoned = _stage(weights, "abc123")
    _install_fake(monkeypatch, _writes(TORCH_ZIP_BYTES))
    assert resolve_weights("clipvis-lvis-r50", progress=False) == weights / "clipvis_lvis_r50_7.pth"
    assert not abandoned.exists()


def _waiting_signal(monkeypatch: pytest.MonkeyPatch) -> Any:
    """An event set once a download lock's `acquire` starts waiting for another holder (after its `on_wait`): a test
    waits on it to know the resolver reached its waiting path, rather than sleeping and hoping it did."""
    import threading

    from clipvis.weights.cache_files import DownloadLock

    waiting = threading.Event()
    acquire = DownloadLock.acquire

    def signalling(self: DownloadLock, *, exclusive: bool, wait: bool,
                   on_wait: Callable[[], object] | None = None) -> bool | None:
        def said() -> None:
            if on_wait is not None:
                on_wait()
            waiting.set()

        return acquire(self, exclusive=exclusive, wait=wait, on_wait=said)

    monkeypatch.setattr(DownloadLock, "acquire", signalling)
    return waiting


def _resolve_in_a_thread(name: str, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    import threading

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["path"] = resolve_weights(name, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_second_process_waits_for_the_download_in_progress_and_uses_its_file(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """8 torchrun ranks on one machine made 8 Google Drive downloads of one file (quota). Another process holding
    the file's download lock is waited for, said once, and the file it verified is used: no download of its own."""
    from clipvis.weights.cache_files import DownloadLock

    weights = isolated_cache / "weights"
    weights.mkdir(parents=True)
    target = weights / "clipvis_lvis_r50_7.pth"
    fake = _install_fake(monkeypatch, _writes(TORCH_ZIP_BYTES))
    other = DownloadLock(target)  # another open file: to flock, another process
    assert other.acquire(exclusive=True, wait=False)
    waiting = _waiting_signal(monkeypatch)
    try:
        thread, outcome = _resolve_in_a_thread("clipvis-lvis-r50", progress=True)
        assert waiting.wait(10)
        assert thread.is_alive() and fake.calls == []  # waiting, not downloading
        target.write_bytes(LEGACY_PICKLE_BYTES)  # the other process' verified download is moved into place
    finally:
        other.release()
    thread.join(10)
    assert outcome == {"path": target} and fake.calls == [] and target.read_bytes() == LEGACY_PICKLE_BYTES
    waiting = [line for line in capsys.readouterr().err.splitlines() if "waiting" in line]
    assert waiting == [f"waiting for another process downloading clipvis-lvis-r50 to {target}"]


def test_a_waiter_downloads_itself_when_the_other_download_fails_or_dies(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock dies with its process (or is released by a download that recorded no failure: interrupted): the
    waiter then downloads the file. A failure recorded before the wait (an earlier run's) does not stop it."""
    from clipvis.weights.cache_files import DownloadLock, record_failure

    target = isolated_cache / "weights" / "clipvis_lvis_r50_7.pth"
    target.parent.mkdir(parents=True)
    record_failure(target, "the download from Google Drive failed (an earlier run's)", None)
    fake = _install_fake(monkeypatch, _writes(TORCH_ZIP_BYTES))
    other = DownloadLock(target)
    assert other.acquire(exclusive=True, wait=False)
    waiting = _waiting_signal(monkeypatch)
    thread, outcome = _resolve_in_a_thread("clipvis-lvis-r50", progress=False)
    assert waiting.wait(10)  # the resolver waits for the other download
    other.release()  # gone without a file
    thread.join(10)
    assert outcome == {"path": target} and len(fake.calls) == 1 and target.read_bytes() == TORCH_ZIP_BYTES


def test_the_waiters_of_a_download_that_fails_fail_at_once_with_its_reason(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each process waiting for a download that failed took the lock after it and tried again: N torchrun ranks and a
    stalled Google Drive took N times the timeout. The failing download records why beside the lock before letting
    go of it; a waiter finding that record new since its wait began fails at once with that reason (one download in
    all), and a later run (which waits for nobody) tries again, the old record stopping nothing."""
    import json
    import os
    import threading
    import time

    target = isolated_cache / "weights" / "clipvis_lvis_r50_7.pth"
    release = threading.Event()

    def stalls_then_times_out(output: Path) -> str:
        output.write_bytes(b"PK\x03\x04 partial")
        release.wait(10)
        raise ConnectionError("HTTPSConnectionPool(host='drive.usercontent.google.com'): Read timed out.")

    fake = _install_fake(monkeypatch, stalls_then_times_out)
    first, first_outcome = _resolve_in_a_thread("clipvis-lvis-r50", progress=False)
    deadline = time.monotonic() + 10
    while not fake.calls and time.monotonic() < deadline:  # the first download is under way, holding the lock
        time.sleep(0.02)
    waiting = _waiting_signal(monkeypatch)
    waiter, outcome = _resolve_in_a_thread("clipvis-lvis-r50", progress=False)
    assert waiting.wait(10)
    assert waiter.is_alive() and len(fake.calls) == 1  # waiting, not downloading
    started = time.monotonic()
    release.set()
    first.join(10)
    waiter.join(10)
    assert time.monotonic() - started < 5 and len(fake.calls) == 1  # no download of its own after the failure
    own = str(first_outcome["error"])
    reason = "the download from Google Drive failed (ConnectionError: HTTPSConnectionPool(" \
             "host='drive.usercontent.google.com'): Read timed out.)"
    assert f"is not available: {reason}. " in own
    error = outcome["error"]
    assert isinstance(error, WeightsNotAvailableError) and "\n" not in str(error)
    assert str(error).startswith(f"checkpoint 'clipvis-lvis-r50' is not available: the download of it by another "
                                 f"process (pid {os.getpid()}), which this one waited for, failed: {reason}. ")
    assert str(error).endswith(own[own.index(reason) + len(reason):])  # what to do, as the failed download said
    record = json.loads((target.parent / ".clipvis_lvis_r50_7.pth.failed.json").read_text())
    assert record["reason"] == reason and record["pid"] == os.getpid() and abs(record["time"] - time.time()) < 60
    assert not target.exists() and _leftovers(target.parent) == []

    _install_fake(monkeypatch, _writes(TORCH_ZIP_BYTES))  # a later run: the old failure does not stop it
    assert resolve_weights("clipvis-lvis-r50", progress=False) == target
    assert not (target.parent / ".clipvis_lvis_r50_7.pth.failed.json").exists()  # a success forgets it


def test_resolving_a_cached_release_removes_what_killed_downloads_left(isolated_cache: Path) -> None:
    """The cleanup ran only when a download started, and a cached release never downloads again: a killed
    download's partial file stayed for good. Resolving any cached release removes the staging folders nobody holds,
    of every release, however recent."""
    from clipvis.weights.cache_files import DownloadLock

    weights = isolated_cache / "weights"
    weights.mkdir(parents=True)
    (weights / "clipvis_lvis_r50_7.pth").write_bytes(TORCH_ZIP_BYTES)
    own = _stage(weights, "k1ll3d")
    other = _stage(weights, "x9", "clipvis_lvis_convnext_b_7.pth")
    busy = _stage(weights, "b2", "clipvis_coco_ytvis19_r50_10.pth")
    foreign = weights / ".not-a-staging-folder"
    foreign.mkdir()
    live = DownloadLock(weights / "clipvis_coco_ytvis19_r50_10.pth")
    assert live.acquire(exclusive=False, wait=False)
    try:
        assert resolve_weights("clipvis-lvis-r50") == weights / "clipvis_lvis_r50_7.pth"
    finally:
        live.release()
    assert not own.exists() and not other.exists()
    assert busy.exists() and foreign.exists()
    assert gdown.download.calls == []  # type: ignore[attr-defined]


def test_a_download_killed_with_sigkill_leaves_nothing_once_the_release_is_resolved(
    isolated_cache: Path, tmp_path: Path
) -> None:
    """The real thing: a process downloading (staging folder, lock held) is killed with SIGKILL; its lock dies with
    it, and the next resolve of a cached release removes its partial file."""
    import os
    import signal
    import subprocess
    import time

    weights = isolated_cache / "weights"
    started = tmp_path / "started"
    script = f"""
import pathlib, time, gdown
from clipvis.weights import resolve_weights
def stalled(*, id, output, quiet, **kwargs):
    pathlib.Path(output).write_bytes(b"partial")
    pathlib.Path({str(started)!r}).touch()
    time.sleep(60)
gdown.download = stalled
resolve_weights("clipvis-lvis-r50")
"""
    env = {**os.environ, "CLIPVIS_CACHE": str(isolated_cache)}
    process = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    [staged] = [p for p in weights.iterdir() if p.is_dir()]
    (weights / "clipvis_coco_ytvis19_r50_10.pth").write_bytes(TORCH_ZIP_BYTES)
    assert resolve_weights("clipvis-coco-ytvis19-r50") == weights / "clipvis_coco_ytvis19_r50_10.pth"
    assert not staged.exists()


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_a_downloaded_checkpoint_gets_the_umasks_mode(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, umask: int
) -> None:
    """gdown writes through a NamedTemporaryFile (0600): the cached file was readable by its downloader alone, and
    the other users of a shared CLIPVIS_CACHE got "Permission denied". It gets the mode open() would give it."""
    import os
    import stat

    def private_file(output: Path) -> str:
        handle = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(handle, TORCH_ZIP_BYTES)
        os.close(handle)
        return str(output)

    _install_fake(monkeypatch, private_file)
    previous = os.umask(umask)
    try:
        target = resolve_weights("clipvis-lvis-r50", progress=False)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE(isolated_cache.stat().st_mode) == 0o777 & ~umask


class _Heard:
    """A DownloadReporter that keeps what it is told."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.progress_calls: list[tuple[str, int, int | None]] = []
        self.closed = 0

    def say(self, message: str) -> None:
        self.lines.append(message)

    def progress(self, name: str, done: int, total: int | None) -> None:
        self.progress_calls.append((name, done, total))

    def close(self) -> None:
        self.closed += 1


def _like_gdown(output: Path, *, quiet: bool, progress: Callable[[int, int | None], None] | None = None,
                **kwargs: Any) -> str:
    """gdown 6.x: "Downloading...", "From:", a "To:" naming the output (in the staging folder) and a tqdm bar on
    stderr unless quiet; the progress callback after each chunk."""
    if not quiet:
        print(f"Downloading...\nFrom: https://drive.google.com/uc?id={kwargs['id']}\nTo: {output}", file=sys.stderr)
    for done in (32, 64):
        if not quiet:
            print(f"\r {done * 100 // 64}%|#####     | {done}/64 [00:00<00:00, 1.00MB/s]", end="", file=sys.stderr)
        if progress is not None:
            progress(done, 64)
    output.write_bytes(TORCH_ZIP_BYTES)
    return str(output)


def _install_gdown_like(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def download(*, id: str, output: str, quiet: bool, **kwargs: Any) -> str:
        calls.append({"id": id, "output": output, "quiet": quiet, **kwargs})
        return _like_gdown(Path(output), quiet=quiet, id=id, **kwargs)

    monkeypatch.setattr(gdown, "download", download)
    return calls


def test_a_download_says_what_it_does_through_the_reporter_and_gdown_says_nothing(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """gdown printed "Downloading...", "To: <staging folder>" and its bar on stderr whatever the caller's format (a
    `segment --log-format jsonl` stderr got non-JSON lines before the inputs ran). gdown is quiet; the download says
    that it starts (the release, its Drive page, the file in the cache) and how far it got through the installed
    reporter, fed by gdown's progress callback, and nothing else reaches stderr."""
    from clipvis.weights import download_reporter

    calls = _install_gdown_like(monkeypatch)
    heard = _Heard()
    with download_reporter(heard):
        target = resolve_weights("clipvis-lvis-r50")
    checkpoint = get_pretrained("clipvis-lvis-r50")
    assert calls[0]["quiet"] is True and heard.closed == 1
    assert heard.lines == [f"downloading clipvis-lvis-r50 from {checkpoint.url} to {target}"]
    assert heard.progress_calls == [("clipvis-lvis-r50", 32, 64), ("clipvis-lvis-r50", 64, 64)]
    assert capfd.readouterr() == ("", "")
    target.unlink()
    resolve_weights("clipvis-lvis-r50", progress=False)  # progress off: nothing is said, gdown quiet as ever
    assert calls[1]["quiet"] is True and "progress" not in calls[1] and capfd.readouterr() == ("", "")


def test_without_a_reporter_a_download_says_it_on_stderr_with_a_line_a_minute(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Python API's default (no reporter installed): the same lines on stderr, the progress as a bar on a
    terminal, else as a line every `every_s` (a minute) naming the release, the megabytes and the rate."""
    from clipvis.weights import DownloadLines
    from clipvis.weights.download_report import progress_text

    _install_gdown_like(monkeypatch)
    target = resolve_weights("clipvis-lvis-r50")
    url = get_pretrained("clipvis-lvis-r50").url
    assert capsys.readouterr().err == f"downloading clipvis-lvis-r50 from {url} to {target}\n"  # not a terminal
    said: list[str] = []
    lines = DownloadLines(said.append, bar=False, every_s=0.0)
    lines.progress("clipvis-lvis-r50", 160_000_000, 473_000_000)
    assert len(said) == 1 and said[0].startswith("downloading clipvis-lvis-r50: 160 of 473 MB, ")
    assert progress_text("clipvis-lvis-r50", 160_000_000, 473_000_000, 12_500_000) == \
        "downloading clipvis-lvis-r50: 160 of 473 MB, 12.5 MB/s, 0:25 left"
    assert progress_text("x", 5_000_000, None, 1e6) == "downloading x: 5 MB, 1.0 MB/s"


def test_network_timeout_is_always_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled network must fail, not hang: gdown >= 6.3 (the declared floor) takes a (connect, read) timeout."""
    fake = _install_fake(monkeypatch, _writes(TORCH_ZIP_BYTES))
    resolve_weights("clipvis-lvis-r50")
    connect, between_bytes = fake.calls[0]["timeout"]
    assert 0 < connect <= 60 and 0 < between_bytes <= 300


def _declared_floors() -> dict[str, tuple[int, ...]]:
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    return {
        m.group(1).lower(): tuple(int(x) for x in m.group(2).split("."))
        for m in re.finditer(r'^\s*"([A-Za-z0-9_.-]+)>=([0-9.]+)"', text, re.MULTILINE)
    }


def test_declared_floors_guarantee_timeouts_and_safe_loading() -> None:
    """gdown 6.3 is the first release whose download() takes a timeout; torch 2.6 makes weights_only the torch.load
    default; open_clip 2.29 loads every pretrained CLIP (the OpenAI ones included) with weights_only=True."""
    floors = _declared_floors()
    assert floors["gdown"] >= (6, 3)
    assert floors["torch"] >= (2, 6)
    assert floors["open_clip_torch"] >= (2, 29)
    installed_download = sys.modules["gdown.download"].download  # the real one (the fixture fakes gdown.download)
    assert "timeout" in inspect.signature(installed_download).parameters


def test_verifier_runs_before_the_file_enters_the_cache(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = isolated_cache / "weights" / "clipvis_lvis_r50_7.pth"
    _install_fake(monkeypatch, _writes(TORCH_ZIP_BYTES))
    checked: list[Path] = []

    def accept(path: Path) -> None:
        assert not target.exists() and path.read_bytes() == TORCH_ZIP_BYTES
        checked.append(path)

    assert resolve_weights("clipvis-lvis-r50", verify=accept) == target
    assert len(checked) == 1 and target.is_file()
    target.unlink()

    def reject(path: Path) -> None:
        raise ValueError("missing keys (3): a, b, c")

    with pytest.raises(WeightsNotAvailableError, match="not the expected checkpoint .missing keys") as info:
        resolve_weights("clipvis-lvis-r50", verify=reject)
    assert "\n" not in str(info.value)
    assert not target.exists() and _leftovers(target.parent) == []  # nothing half-checked is left behind


def test_stale_html_in_cache_is_downloaded_again(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = isolated_cache / "weights" / "clipvis_lvis_r50_7.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(HTML_BYTES)
    fake = _install_fake(monkeypatch, _writes(TORCH_ZIP_BYTES))
    assert resolve_weights("clipvis-lvis-r50") == target
    assert target.read_bytes() == TORCH_ZIP_BYTES
    assert len(fake.calls) == 1


def _assert_helpful_message(error: WeightsNotAvailableError, name: str) -> None:
    checkpoint = get_pretrained(name)
    target = cache_path(name)
    message = str(error)
    assert "\n" not in message
    assert repr(name) in message
    assert checkpoint.url in message
    assert str(target) in message
    assert "path of a checkpoint file you already have" in message
    assert (error.checkpoint, error.url, error.target) == (name, checkpoint.url, str(target))
    assert not target.exists()
    assert _leftovers(target.parent) == []


@pytest.mark.parametrize(
    ("behaviour", "expected_reason"),
    [
        (_raises(ConnectionError("Failed to resolve 'drive.google.com'\nName unknown")), "ConnectionError"),
        (_raises(RuntimeError("Too many users have viewed or downloaded this file")), "Too many users"),
        (lambda output: None, "produced no file"),
        (_writes(HTML_BYTES), "an HTML page instead of a PyTorch checkpoint"),
        (_writes(b""), "an empty file instead of a PyTorch checkpoint"),
    ],
    ids=["raises-connection-error", "raises-quota", "returns-none", "writes-html", "writes-empty"],
)
def test_failed_download_raises_helpful_error(
    monkeypatch: pytest.MonkeyPatch, behaviour: Callable[[Path], Any], expected_reason: str
) -> None:
    fake = _install_fake(monkeypatch, behaviour)
    with pytest.raises(WeightsNotAvailableError) as excinfo:
        resolve_weights("clipvis-coco-ytvis19-convnext-b")
    assert expected_reason in str(excinfo.value)
    assert len(fake.calls) == 1
    _assert_helpful_message(excinfo.value, "clipvis-coco-ytvis19-convnext-b")


def _cut_short(output: Path) -> str:
    """gdown 6.x when the connection ends before the announced length: the bytes so far stay in a partial file
    beside the output, which its message names for a resume."""
    from gdown.exceptions import DownloadError

    partial = output.with_name(output.name + "k3x9q2zw.part")
    partial.write_bytes(TORCH_ZIP_BYTES[:20])
    raise DownloadError(f"Download is incomplete: received 20 bytes but the server announced 64 bytes.\nThe received "
                        f"bytes are kept in {partial}, which resume (--continue on the command line) picks up.")


def _unreadable_zip(output: Path) -> str:
    """A download cut short without a length announced: the file is written whole, and the verifier (load_model's
    check) names it in its error."""
    output.write_bytes(TORCH_ZIP_BYTES[:20])
    return str(output)


def _refuses_a_cut_zip(path: Path) -> None:
    raise ValueError(f"{path}: not a readable PyTorch checkpoint: the zip archive is incomplete (a download or copy "
                     "cut short?)")


@pytest.mark.parametrize(("behaviour", "verify", "reason"), [
    (_cut_short, None, "the download from Google Drive failed (DownloadError: Download is incomplete: received 20 "
                       "bytes but the server announced 64 bytes.)"),
    (_unreadable_zip, _refuses_a_cut_zip, "the downloaded file is not the expected checkpoint (not a readable "
                                          "PyTorch checkpoint: the zip archive is incomplete (a download or copy cut "
                                          "short?))"),
], ids=["gdown-cut-short", "verifier-names-the-file"])
def test_a_download_cut_short_names_only_paths_that_exist_and_says_what_to_do(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, behaviour: Callable[[Path], Any],
    verify: Callable[[Path], None] | None, reason: str,
) -> None:
    """gdown's "The received bytes are kept in <staging folder>/...part, which resume picks up" (and the verifier's
    "<staging folder>/<file>: not a readable PyTorch checkpoint") named a folder clipvis had removed by the time the
    user read it: they looked for, or resumed from, a path that no longer existed. The message names only the cache
    file to save a copy as (in a folder that exists) and the Drive page, and says to try again (from the start) or
    to download it by hand."""
    _install_fake(monkeypatch, behaviour)
    with pytest.raises(WeightsNotAvailableError) as excinfo:
        resolve_weights("clipvis-lvis-r50", progress=False, verify=verify)
    message = str(excinfo.value)
    target = cache_path("clipvis-lvis-r50")
    url = get_pretrained("clipvis-lvis-r50").url
    assert message == f"checkpoint 'clipvis-lvis-r50' is not available: {reason}. Try again (a new download starts " \
        f"from the beginning: nothing of this one is kept), or download it by hand from {url} and save it as " \
        f"{target}, or give the path of a checkpoint file you already have instead of the name (load_model(PATH) in " \
        "Python)."
    # a command line words that last part as its own option (the rest as it is)
    cut = message.index("(load_model(PATH) in Python).")
    assert excinfo.value.worded("--weights PATH") == message[:cut] + "(--weights PATH)."
    named = re.findall(r"(?<![\w:/])/[^\s,;()']+", message)
    assert named == [str(target)] and target.parent.is_dir() and _leftovers(target.parent) == []


def test_a_cache_that_cannot_be_written_says_to_use_another_cache(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only cache said "cannot write to .../weights ... save it as <that same unwritable path>"."""
    import errno
    import tempfile

    def read_only(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, "Read-only file system")

    fake = _install_fake(monkeypatch, _writes(TORCH_ZIP_BYTES))
    monkeypatch.setattr(tempfile, "TemporaryDirectory", read_only)
    with pytest.raises(WeightsNotAvailableError) as excinfo:
        resolve_weights("clipvis-lvis-r50")
    message = str(excinfo.value)
    weights = isolated_cache / "weights"
    assert f"is not available: cannot write to {weights} (Read-only file system). Set CLIPVIS_CACHE to a folder you " \
           "can write to (it is downloaded there), or download it by hand from " in message
    assert "save it as" not in message and "\n" not in message and fake.calls == []


def test_a_full_disk_during_the_download_is_said_to_be_the_disk_not_google_drive(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It read "the download from Google Drive failed (OSError: [Errno 28] No space left on device)"."""
    import errno

    _install_fake(monkeypatch, _raises(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(WeightsNotAvailableError) as excinfo:
        resolve_weights("clipvis-lvis-r50")
    message = str(excinfo.value)
    weights = isolated_cache / "weights"
    assert f"is not available: the disk holding {weights} is full (No space left on device). Free some space there " \
           "or set CLIPVIS_CACHE to a folder on a disk with room" in message
    assert "Google Drive" not in message and "\n" not in message
    assert _leftovers(weights) == []


@pytest.mark.parametrize("flag", ["1", "true", "YES", "y", "2", "enabled"])  # set: README; y/2/enabled downloaded
def test_offline_environment_never_downloads(monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    monkeypatch.setenv("CLIPVIS_OFFLINE", flag)
    fake = _install_fake(monkeypatch, _writes(TORCH_ZIP_BYTES))
    with pytest.raises(WeightsNotAvailableError, match="CLIPVIS_OFFLINE") as excinfo:
        resolve_weights("clipvis-lvis-r50")
    assert fake.calls == []
    _assert_helpful_message(excinfo.value, "clipvis-lvis-r50")


def test_offline_with_a_stale_cached_file_says_to_unset_the_flag_or_replace_the_file(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It read "the cached file is an HTML page, not a checkpoint and CLIPVIS_OFFLINE is set", naming neither the
    file nor what to do."""
    target = isolated_cache / "weights" / "clipvis_lvis_r50_7.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(HTML_BYTES)
    monkeypatch.setenv("CLIPVIS_OFFLINE", "1")
    fake = _install_fake(monkeypatch, _writes(TORCH_ZIP_BYTES))
    with pytest.raises(WeightsNotAvailableError) as excinfo:
        resolve_weights("clipvis-lvis-r50")
    message = str(excinfo.value)
    assert f"its cached file {target} is an HTML page, not a checkpoint, and it is not downloaded again while " \
           "CLIPVIS_OFFLINE is set. Unset CLIPVIS_OFFLINE to download it again, or delete that file, download the " \
           f"checkpoint by hand from {get_pretrained('clipvis-lvis-r50').url} and save it there, or give the path" \
           in message
    assert fake.calls == [] and target.read_bytes() == HTML_BYTES and "\n" not in message


@pytest.mark.parametrize("flag", ["0", "false", "No", "off", "", "n", "none", "disabled"])
def test_offline_flag_zero_still_downloads(monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    monkeypatch.setenv("CLIPVIS_OFFLINE", flag)
    fake = _install_fake(monkeypatch, _writes(TORCH_ZIP_BYTES))
    assert resolve_weights("clipvis-lvis-r50").is_file()
    assert len(fake.calls) == 1


def test_download_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _install_fake(monkeypatch, _writes(TORCH_ZIP_BYTES))
    with pytest.raises(WeightsNotAvailableError, match="downloading is disabled") as excinfo:
        resolve_weights("clipvis-lvis-r50", download=False)
    assert fake.calls == []
    _assert_helpful_message(excinfo.value, "clipvis-lvis-r50")


def test_a_download_lock_made_under_umask_077_can_be_taken_by_the_other_users(isolated_cache: Path) -> None:
    """A lock file made under umask 077 was 0600: the other users of a shared CLIPVIS_CACHE could not open it, and
    their downloads of that file went on unlocked (two downloads at once) without a word. It is readable by all (a
    flock needs no more; the file is empty), and one of our own left 0600 by an older clipvis is made so too."""
    import os
    import stat

    from clipvis.weights.cache_files import DownloadLock

    target = isolated_cache / "weights" / "clipvis_lvis_r50_7.pth"
    target.parent.mkdir(parents=True)
    previous = os.umask(0o077)
    try:
        lock = DownloadLock(target)
        assert lock.acquire(exclusive=True, wait=False)
        lock.release()
    finally:
        os.umask(previous)
    assert stat.S_IMODE(lock.path.stat().st_mode) == 0o644
    lock.path.chmod(0o600)
    assert lock.acquire(exclusive=False, wait=False)
    lock.release()
    assert stat.S_IMODE(lock.path.stat().st_mode) == 0o644


def test_a_download_lock_that_cannot_be_opened_is_said_once(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user's lock file that we cannot open (an older clipvis made it 0600 under their umask 077): the file is
    downloaded unlocked, as before, but one warning says so, why, and what fixes it. (Opening it is refused by a
    fake os.open: tests run as root, which permission bits do not stop.)"""
    import os

    from clipvis.weights import cache_files

    target = isolated_cache / "weights" / "clipvis_lvis_r50_7.pth"
    target.parent.mkdir(parents=True)
    lock_file = target.with_name(f".{target.name}.lock")
    lock_file.touch()
    real_open = os.open

    def refusing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(path) == lock_file:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(cache_files.os, "open", refusing_open)
    fake = _install_fake(monkeypatch, _writes(TORCH_ZIP_BYTES))
    with pytest.warns(RuntimeWarning) as caught:
        assert resolve_weights("clipvis-lvis-r50", progress=False) == target
    assert len(fake.calls) == 1 and target.read_bytes() == TORCH_ZIP_BYTES
    [warning] = [str(w.message) for w in caught]
    assert warning.startswith(f"{lock_file}: cannot open this download lock (Permission denied")
    assert "downloaded without it" in warning and f"chmod a+r {lock_file}" in warning and "\n" not in warning


def test_a_cache_that_cannot_be_written_says_so_without_a_lock_warning(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No lock file can be made in a cache folder that cannot be written: the error says that (one line), with no
    warning about the lock besides."""
    import warnings

    from clipvis.weights import cache_files

    target = isolated_cache / "weights" / "clipvis_lvis_r50_7.pth"
    target.parent.mkdir(parents=True)

    def read_only(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cache_files.os, "open", read_only)
    monkeypatch.setattr("tempfile.mkdtemp", lambda *a, **k: read_only(k.get("dir"), 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(WeightsNotAvailableError, match="cannot write to"):
            resolve_weights("clipvis-lvis-r50", progress=False)
