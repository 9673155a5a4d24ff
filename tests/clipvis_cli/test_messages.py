"""What the commands print about a path: one line, and never the same text for two names."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from clipvis.cli.exporters.adapter import ExportFormatWriter
from clipvis.cli.exporters.video_tools import reencode_hint
from clipvis.cli.messages import error_line, path_text, shell_word, shown_path
from clipvis.cli.segment import stale_exports_warning


@pytest.mark.parametrize("name, shown", [
    ("clip.mp4", "clip.mp4"),
    ("café 狗 [1].mp4", "café 狗 [1].mp4"),
    ("bad\nname.mp4", "bad\\nname.mp4"),
    ("bad\\nname.mp4", "bad\\\\nname.mp4"),  # a backslash and an n: told from a newline
    ("tab\tcr\r.mp4", "tab\\tcr\\r.mp4"),
    ("esc\x1b[31m.mp4", "esc\\x1b[31m.mp4"),  # no terminal colour codes from a file name
    ("line\u2028sep\u202e.mp4", "line\\u2028sep\\u202e.mp4"),
    (os.fsdecode(b"bad\xff.mp4"), "bad\\xff.mp4"),  # an undecodable byte, as path_text writes it
    ("bad\\xff.mp4", "bad\\\\xff.mp4"),  # a name that spells it
    (" a.mp4 ", "' a.mp4 '"),  # spaces at an edge: quoted, so that they show
    ("a.mp4 ", "'a.mp4 '"),
    ("dir/ a b.mp4", "dir/ a b.mp4"),  # inner spaces: plain
    ("' a.mp4 '", "'\\' a.mp4 \\''"),  # a name that spells a quoted one
    ("'a\n", "'\\'a\\n'"),
    ("it's.mp4", "it's.mp4"),
])
def test_a_shown_path_is_one_line_and_tells_names_apart(name, shown) -> None:
    assert shown_path(Path(name)) == shown_path(name) == shown
    assert "\n" not in shown and shown.isprintable()


def test_an_error_line_tells_a_space_from_a_newline_and_keeps_the_exact_name_out_of_it() -> None:
    """A newline in a name was turned into a space (`bad name.mp4` for both names); two spaces into one."""
    lines = {error_line("zero bytes (empty file)", Path(name)) for name in
             ("bad name.mp4", "bad\nname.mp4", "bad  name.mp4", "bad\tname.mp4")}
    assert lines == {"clipvis: error: bad name.mp4: zero bytes (empty file)",
                     "clipvis: error: bad\\nname.mp4: zero bytes (empty file)",
                     "clipvis: error: bad  name.mp4: zero bytes (empty file)",
                     "clipvis: error: bad\\tname.mp4: zero bytes (empty file)"}
    assert error_line("cannot read\n  line two") == "clipvis: error: cannot read line two"  # a cause's line breaks
    assert error_line(FileNotFoundError(2, "No such file or directory", "a\nb.mp4")) == (
        "clipvis: error: No such file or directory (a\\nb.mp4)")
    assert path_text("bad\nname.mp4") == "bad\nname.mp4"  # JSON files and events keep the name itself
    # a name's leading and trailing spaces are its own: only line breaks go at either end
    line = "clipvis: error:   clip.mp4 : no such file or directory"
    assert error_line("no such file or directory", "  clip.mp4 ") == line
    assert error_line("  clip.mp4 : no such file or directory\n") == line
    # and a file's name with them is shown between quotes, so that they show
    assert error_line("no such file or directory", Path("  clip.mp4 ")) == (
        "clipvis: error: '  clip.mp4 ': no such file or directory")
    assert shown_path("") == "''"


def _suggested_commands(folder: Path) -> list[list[str]]:
    """What the shell reads from each command line a message suggests for ``folder`` (and a video in it): the ffmpeg
    re-encode, the `clipvis export` of stale exports, the `clipvis export --media-url` of segment's Label Studio."""
    hint = reencode_hint(folder / "clip.avi")
    stale = stale_exports_warning(folder, ["mots-txt"], "replaced")
    writer = ExportFormatWriter("labelstudio", run_formats=("ytvis", "labelstudio"))
    video = SimpleNamespace(info=SimpleNamespace(source=str(folder / "clip.avi")), categories=["cat"])
    label_studio = writer._segment_warnings(folder / "labelstudio.zip", video)[-1]
    return [shlex.split(hint[hint.index("(ffmpeg") + 1 : hint.index(") and")]),
            shlex.split(stale[stale.index("(clipvis export") + 1 : stale.index(" --to ...)")]),
            shlex.split(label_studio[label_studio.index("(clipvis export") + 1 : label_studio.index("; it reads")])]


@pytest.mark.parametrize("name", [" clip", "run ", "bob's'", "'quoted'", "a\\b", "a\\nb", "it's here", "-dash",
                                  "plain"])
def test_a_suggested_command_gives_the_shell_the_real_names(name) -> None:
    """`shell_word` quoted `shown_path`'s text, so a name shown with quotes was quoted twice (`ffmpeg -i
    ''"'"' clip.avi'"'"''`: the shell read `' clip.avi'`, quotes and all) and a backslash was doubled (`a\\b` read as
    `a\\\\b`): the pasted command named a file that is not there. The shell now reads the real names back."""
    ffmpeg, stale, label_studio = _suggested_commands(Path(name))
    folder = f"./{name}" if name.startswith("-") else name
    assert ffmpeg[:3] == ["ffmpeg", "-i", f"{folder}/clip.avi"] and ffmpeg[-1] == f"{folder}/clip-h264.mp4"
    assert stale == ["clipvis", "export", folder]
    assert label_studio[:3] == ["clipvis", "export", folder]
    assert shlex.split(shell_word("")) == [""]


@pytest.mark.parametrize("name", ["a\nb", "tab\there", "esc\x1b[31m", os.fsdecode(b"bad\xff y"), "rtl\u202e"])
def test_a_name_that_does_not_print_is_one_ansi_c_quoted_word_on_one_line(name) -> None:
    """A newline in a name can only be given between quotes across two lines; the suggested word is one line of
    `$'...'` (ANSI-C quoting), which bash reads back as the name's exact bytes."""
    word = shell_word(name)
    assert word.startswith("$'") and word.isprintable()
    read_back = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, check=True).stdout
    assert read_back == os.fsencode(name)


def test_an_exceptions_reason_is_a_few_words_on_one_line() -> None:
    import av

    from clipvis.cli.messages import error_reason

    assert error_reason(PermissionError(13, "Permission denied", "/x/y")) == "Permission denied"  # no [Errno 13]
    assert error_reason(OSError("cannot identify image file")) == "cannot identify image file"
    assert error_reason(av.error.InvalidDataError(1094995529, "Invalid data found when processing input")) == (
        "Invalid data found when processing input")
    assert error_reason(ValueError("line one\n  line two")) == "line one line two"
    assert error_reason(KeyError()) == "KeyError"


def test_video_and_export_input_errors_name_their_file_the_same_way() -> None:
    from clipvis.cli.exporters.loading import ExportInput, ExportInputError
    from clipvis.cli.video_io import VideoReadError

    name = Path("two\nlines/ytvis.json")
    assert str(ExportInputError(name, "not valid JSON")) == str(VideoReadError(name, "not valid JSON")) == (
        "two\\nlines/ytvis.json: not valid JSON")
    assert ExportInput(name, "no such file or directory").describe_error() == (
        "two\\nlines/ytvis.json: no such file or directory")
    assert isinstance(ExportInputError(name, "x"), ValueError)
