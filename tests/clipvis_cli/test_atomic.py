"""clipvis.cli.atomic: output files written under a temporary name and renamed into place."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from clipvis.cli.atomic import (
    OutputNotWritableError,
    atomic_output_path,
    atomic_write_json,
    atomic_write_text,
    ensure_output_dir,
    is_temp_file_name,
    output_dir_for_now,
    output_file_target,
    remove_stale_temp_files,
    remove_stale_temp_files_of,
)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_atomic_write_text_and_json(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "héllo")
    atomic_write_json(tmp_path / "b.json", {"x": [1, 2], "name": "chien"})
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": [1, 2], "name": "chien"}
    assert leftovers(tmp_path) == ["a.txt", "b.json"]


def test_atomic_files_get_normal_permissions(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask


def test_atomic_files_get_the_umask_in_force_when_they_are_written(tmp_path: Path) -> None:
    """The umask was read once, when the module was imported: a program that set a private umask later (077) still
    wrote its files readable by all."""
    previous = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "private.txt", "x")
        with atomic_output_path(tmp_path / "private.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(previous)
    assert {stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("private.txt", "private.bin")} == {0o600}


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_output_path_leaves_nothing_on_failure(tmp_path: Path, error: BaseException) -> None:
    with pytest.raises(type(error)):
        with atomic_output_path(tmp_path / "out.mp4") as tmp:
            tmp.write_bytes(b"partial")
            raise error
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(not hasattr(__import__("signal"), "pthread_sigmask"), reason="signals cannot be blocked here")
def test_a_stop_just_after_the_temporary_file_is_made_leaves_none(tmp_path: Path, monkeypatch) -> None:
    """A SIGTERM 0-10 ms after segment's `writing` event left `.coco.XXXX.tmp.json` (0 bytes) in the output folder:
    the file existed once mkstemp returned, the cleanup only began a few statements later."""
    import signal
    import tempfile

    made = tempfile.mkstemp

    def made_then_stopped(*args: object, **kwargs: object) -> tuple[int, str]:
        result = made(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # Python's handler raises KeyboardInterrupt at its next chance
        return result

    monkeypatch.setattr(tempfile, "mkstemp", made_then_stopped)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever an earlier test left
    try:
        with pytest.raises(KeyboardInterrupt), atomic_output_path(tmp_path / "coco.json") as temporary:
            temporary.write_text("{}")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_previous_complete_file(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "out.json", "old")
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "out.json", {"bad": object()})
    assert (tmp_path / "out.json").read_text() == "old"
    assert leftovers(tmp_path) == ["out.json"]


def test_atomic_output_path_replaces_on_success(tmp_path: Path) -> None:
    with atomic_output_path(tmp_path / "out.bin") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".bin" and tmp.name != "out.bin"
        assert not (tmp_path / "out.bin").exists()
        tmp.write_bytes(b"done")
    assert (tmp_path / "out.bin").read_bytes() == b"done" and leftovers(tmp_path) == ["out.bin"]


def test_unwritable_output_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputNotWritableError) as caught:
        ensure_output_dir(blocker / "out" / "clip")
    message = str(caught.value)  # the file in the way named (it said "<blocker>/out/clip: ... (Not a directory)")
    assert message == f"{blocker / 'out' / 'clip'}: output not writable ({blocker} is a file, not a folder)"
    with pytest.raises(OutputNotWritableError):
        atomic_write_text(tmp_path / "missing-dir" / "x.txt", "x")
    assert ensure_output_dir(tmp_path / "new" / "dir").is_dir()
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputNotWritableError, match="a symbolic link to .*nowhere, which does not exist"):
        ensure_output_dir(dangling)  # it said "File exists"
    loop = tmp_path / "loop"
    loop.symlink_to(loop.name)  # was "a symbolic link to loop, which does not exist"
    with pytest.raises(OutputNotWritableError, match=r"loop: output not writable \(symbolic-link loop\)$"):
        ensure_output_dir(loop)  # it said "(symbolic-link loop (Too many levels of symbolic links))"


def test_a_folder_made_for_output_that_fails_goes_again_and_no_other(tmp_path: Path) -> None:
    """What a failed run made for its output goes (an empty folder was left behind); a folder that was there, or one
    that got a file meanwhile, stays, and so does every folder of a run that succeeds."""
    had = tmp_path / "had"
    had.mkdir()
    with pytest.raises(KeyboardInterrupt), output_dir_for_now(had / "a" / "b") as made:
        assert made.is_dir()
        raise KeyboardInterrupt
    assert list(had.iterdir()) == []
    with pytest.raises(ValueError), output_dir_for_now(had / "a" / "b"):
        (had / "a" / "someone's.txt").write_text("x")
        raise ValueError
    assert sorted(path.name for path in (had / "a").iterdir()) == ["someone's.txt"]
    with output_dir_for_now(tmp_path / "kept" / "c") as made:
        (made / "out.json").write_text("{}")
    assert (tmp_path / "kept" / "c" / "out.json").is_file()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputNotWritableError), output_dir_for_now(blocker / "d"):
        pass


def test_disk_full_is_reported_as_unwritable_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OutputNotWritableError, match=r"out.json: output not writable \(No space left on device\)"):
        atomic_write_json(tmp_path / "out.json", {"a": 1})
    assert leftovers(tmp_path) == []


def test_atomic_output_is_fsynced_before_rename_and_directory_after(tmp_path: Path, monkeypatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with atomic_output_path(tmp_path / "overlay.mp4") as tmp:
        tmp.write_bytes(b"data")  # written by a library (PyAV) that never fsyncs
    assert events == ["fsync file", "rename", "fsync dir"]
    assert (tmp_path / "overlay.mp4").read_bytes() == b"data"


@pytest.mark.parametrize("name", ["a" * 245 + ".onnx", "é" * 125 + ".json", "b" * 255])
def test_a_name_that_fits_gets_a_temporary_name_that_fits(tmp_path: Path, name: str) -> None:
    """-o with a 250-byte name failed after the whole export ("output not writable (File name too long)", naming
    the folder): its temporary name `.<name>.XXXXXXXX.tmp.onnx` passed the file system's 255 bytes."""
    final = tmp_path / name
    with atomic_output_path(final) as temporary:
        assert len(os.fsencode(temporary.name)) <= 255 and is_temp_file_name(temporary.name)
        assert temporary.name.endswith(".tmp" + final.suffix)
        temporary.write_text("x")
        killed = temporary.with_name(temporary.name[:-len(f".tmp{final.suffix}") - 8] + "killed00.tmp" + final.suffix)
        killed.write_text("left by a killed run")
        os.utime(killed, (0, 0))
    assert final.read_text() == "x"
    assert remove_stale_temp_files_of(final, started=1.0) == [killed]  # its killed runs' files are still its own
    too_long = tmp_path / ("c" * 256)  # named, before any work, as the file (the rename failed after it, unnamed)
    with pytest.raises(OutputNotWritableError, match=f"^{too_long}: output not writable \\(a file name longer than"):
        atomic_write_text(too_long, "x")


def test_a_user_named_output_file_writes_through_a_link_and_refuses_special_files(tmp_path: Path) -> None:
    """export --to onnx -o onto a FIFO or a device made it a regular file (as root, -o /dev/null replaced the
    system's); onto a symbolic link it replaced the link, leaving the file it named as it was."""
    assert output_file_target(tmp_path / "new.onnx") == tmp_path / "new.onnx"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "real.onnx").write_text("old")
    (tmp_path / "link.onnx").symlink_to(Path("models") / "real.onnx")
    target = output_file_target(tmp_path / "link.onnx")
    assert target == (tmp_path / "models" / "real.onnx").resolve()
    atomic_write_text(target, "new")
    assert (tmp_path / "link.onnx").is_symlink() and (tmp_path / "link.onnx").read_text() == "new"
    os.mkfifo(tmp_path / "pipe.onnx")
    with pytest.raises(OutputNotWritableError, match=r"pipe\.onnx: output not writable \(a device, pipe or socket"):
        output_file_target(tmp_path / "pipe.onnx")
    with pytest.raises(OutputNotWritableError, match="a folder, not a file"):
        output_file_target(tmp_path / "models")
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe.onnx").st_mode)


def test_two_long_names_alike_in_their_first_bytes_keep_their_own_temporary_files(tmp_path: Path) -> None:
    """Cut to 236 bytes, names differing after that shared their temporary stem: the clean-up of one removed the
    other's killed run's file."""
    first, second = tmp_path / ("x" * 240 + "A.onnx"), tmp_path / ("x" * 240 + "B.onnx")
    with atomic_output_path(second) as temporary:
        temporary.write_text("B")
        left = temporary.with_name(temporary.name.replace(temporary.name.split(".")[-3], "killed00"))
        left.write_text("B's killed run")
        os.utime(left, (0, 0))
    assert remove_stale_temp_files_of(first, started=1.0) == []
    assert remove_stale_temp_files(tmp_path, [second.name]) == [left]


def test_a_link_into_a_missing_folder_is_refused_not_made(tmp_path: Path) -> None:
    """A dangling link `model.onnx -> ../mnt/usb/model.onnx` made mnt/usb/ and wrote there (an unmounted disk's mount
    point filled the root file system); a shell's `>` refuses it."""
    (tmp_path / "model.onnx").symlink_to(Path("mnt") / "usb" / "model.onnx")
    with pytest.raises(OutputNotWritableError, match=r"a symbolic link to mnt/usb/model\.onnx, whose folder does not"):
        output_file_target(tmp_path / "model.onnx")
    assert not (tmp_path / "mnt").exists()
    (tmp_path / "mnt" / "usb").mkdir(parents=True)  # mounted: written through
    assert output_file_target(tmp_path / "model.onnx") == (tmp_path / "mnt" / "usb" / "model.onnx").resolve()
