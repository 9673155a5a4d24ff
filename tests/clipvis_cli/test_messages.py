"""What the commands print about a path: one line, and never the same text for two names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clipvis.cli.messages import error_line, path_text, shown_path


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
