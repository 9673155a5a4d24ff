"""discover_inputs: how command-line arguments become video sources."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from clipvis.cli.inputs import (
    VideoSource,
    discover_inputs,
    list_image_frames,
    natural_sort_key,
    read_argument_lines,
)


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def names(sources: list[VideoSource]) -> list[str]:
    return [s.path.name for s in sources]


def test_natural_sort_orders_numbers_numerically() -> None:
    assert sorted(["10.png", "2.png", "1.png", "b1.png", "a10.png", "a9.png"], key=natural_sort_key) == [
        "1.png", "2.png", "10.png", "a9.png", "a10.png", "b1.png",
    ]


def test_a_name_and_the_same_name_with_a_number_are_ordered(tmp_path: Path) -> None:
    """'cam' and 'cam2' (one name the other plus a number): the sort raised TypeError ('<' between str and int), so a
    folder holding cam/ and cam2/ crashed segment and export."""
    assert sorted(["cam2", "Cam", "cam", "cam10", "a1", "a"], key=natural_sort_key) == [
        "a", "a1", "Cam", "cam", "cam2", "cam10",
    ]
    touch(tmp_path / "cam" / "x.mp4")
    touch(tmp_path / "cam2" / "x.mp4")
    assert [s.path.parent.name for s in discover_inputs([str(tmp_path)])] == ["cam", "cam2"]


def test_a_file_name_is_ordered_by_its_stem_before_its_extension(tmp_path: Path) -> None:
    """The extension was part of the natural name: "clip.mp4" was the text "clip.mp" and the number 4, so a folder
    and a glob listed clip10.mp4, clip-2.mp4, clip.mp4 (and the output folders came out in that order)."""
    for name in ("clip10.mp4", "clip.mp4", "clip-2.mp4"):
        touch(tmp_path / "tree" / name)
    expected = ["clip.mp4", "clip-2.mp4", "clip10.mp4"]
    assert names(discover_inputs([str(tmp_path / "tree")])) == expected
    assert names(discover_inputs([str(tmp_path / "tree" / "*.mp4")])) == expected
    assert sorted(["clip10.mp4", "clip.mp4", "clip-2.mp4"], key=lambda name: natural_sort_key(name, file=True)) == \
        expected
    # frames keep their order: numbers numerically, the extension only between equal stems
    for name in ("10.png", "2.png", "1.png", "1.jpg", "frame_10.jpg", "frame_9.jpg"):
        touch(tmp_path / "frames" / name)
    assert [p.name for p in list_image_frames(tmp_path / "frames")] == [
        "1.jpg", "1.png", "2.png", "10.png", "frame_9.jpg", "frame_10.jpg",
    ]


def test_explicit_file_any_extension_is_a_video(tmp_path: Path) -> None:
    clip = touch(tmp_path / "clip.mp4")
    odd = touch(tmp_path / "recording.dat")
    sources = discover_inputs([str(clip), str(odd)])
    assert [(s.path, s.kind, s.ok) for s in sources] == [(clip, "video", True), (odd, "video", True)]


def test_directory_is_searched_recursively_in_natural_order(tmp_path: Path) -> None:
    touch(tmp_path / "v10.mp4")
    touch(tmp_path / "v2.mkv")
    touch(tmp_path / "notes.txt")
    touch(tmp_path / ".hidden.mp4")
    touch(tmp_path / "._v2.mkv")  # macOS resource-fork file
    touch(tmp_path / "sub" / "deep" / "x.MOV")
    touch(tmp_path / ".cache" / "y.mp4")
    sources = discover_inputs([str(tmp_path)])
    assert names(sources) == ["x.MOV", "v2.mkv", "v10.mp4"]
    assert all(s.kind == "video" and s.ok for s in sources)


def test_a_search_skips_the_folders_clipvis_writes(tmp_path: Path) -> None:
    """`clipvis segment .` with the default ./clipvis_out: a rerun (or another shard) must not take the overlays of
    the output root for new inputs. The folders clipvis writes hold its lock file; a folder named on the command line
    that holds the lock but no record of outputs (not a video's output folder) is searched."""
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "clipvis_out" / ".clipvis.lock")
    touch(tmp_path / "clipvis_out" / "a" / ".clipvis.lock")
    touch(tmp_path / "clipvis_out" / "a" / "overlay.mp4")
    touch(tmp_path / "elsewhere" / "b.mp4")
    assert names(discover_inputs([str(tmp_path)])) == ["a.mp4", "b.mp4"]
    assert names(discover_inputs([str(tmp_path / "clipvis_out" / "a")])) == ["overlay.mp4"]
    touch(tmp_path / "imgs" / "0.jpg")  # `clipvis segment imgs/ -o imgs/out`: its output root is no sub-folder
    touch(tmp_path / "imgs" / "out" / ".clipvis.lock")
    warnings: list[str] = []
    [source] = discover_inputs([str(tmp_path / "imgs")], warnings=warnings)
    assert source.kind == "images" and source.frame_files == (tmp_path / "imgs" / "0.jpg",) and warnings == []


def test_a_search_takes_the_videos_of_an_output_root_below_it_and_skips_its_folders(tmp_path: Path) -> None:
    """`clipvis segment data/cam1/a.mp4 -o data/cam1`, then new videos in data/cam1, then `clipvis segment data`: the
    search skipped data/cam1 whole (it holds clipvis' lock), losing a.mp4 and c.mp4 without a word (review29). An
    output root (its lock and its journal of folders) is searched as it is when named; its folders are not."""
    data = tmp_path / "data"
    touch(data / "b.mp4")
    touch(data / "cam1" / "a.mp4")
    touch(data / "cam1" / "c.mp4")
    touch(data / "cam1" / ".clipvis.lock", b"")
    touch(data / "cam1" / ".clipvis.folders", b'"a"\n')
    _output_folder(data / "cam1" / "a", data / "cam1" / "a.mp4")
    touch(data / "cam1" / "export" / ".clipvis.lock", b"")  # an export folder: its record
    touch(data / "cam1" / "export" / ".clipvis-export.json", b"{}")
    touch(data / "cam1" / "export" / "masks" / "00000.png")
    touch(data / "cache" / ".clipvis.lock", b"")  # another folder clipvis made (evaluate's): no journal
    touch(data / "cache" / "v.mp4")
    assert names(discover_inputs([str(data)])) == ["b.mp4", "a.mp4", "c.mp4"]


def test_image_folder_is_one_video_in_natural_order(tmp_path: Path) -> None:
    folder = tmp_path / "seq"
    for name in ["10.png", "2.png", "1.png", "notes.txt"]:
        touch(folder / name)
    [source] = discover_inputs([str(folder)])
    assert source.kind == "images" and source.path == folder and source.stem == "seq"
    assert [p.name for p in source.frame_files] == ["1.png", "2.png", "10.png"]


def test_ytvis_layout_gives_one_video_per_frame_folder(tmp_path: Path) -> None:
    root = tmp_path / "JPEGImages"
    for video in ["b1c2", "a10", "a9"]:
        for frame in ["00000.jpg", "00005.jpg"]:
            touch(root / video / frame)
    sources = discover_inputs([str(root)])
    assert [s.stem for s in sources] == ["a9", "a10", "b1c2"]
    assert all(s.kind == "images" and len(s.frame_files) == 2 for s in sources)


def test_folders_that_file_servers_and_archivers_add_are_not_inputs(tmp_path: Path) -> None:
    """A NAS share's `@eaDir` thumbnails and an unzipped macOS archive's `__MACOSX` made an image folder "a folder
    with sub-folders": its frames were ignored (or it failed as holding no videos) and the thumbnail ran instead."""
    for i in range(3):
        touch(tmp_path / "clipA" / f"{i}.jpg")
        touch(tmp_path / "clipA" / "@eaDir" / f"{i}.jpg" / "SYNOFILE_THUMB_M.jpg")
        touch(tmp_path / "clipB" / f"{i}.png")
        touch(tmp_path / "__MACOSX" / "clipB" / f"._{i}.png")
    touch(tmp_path / "#recycle" / "old.mp4")
    sources = discover_inputs([str(tmp_path)])
    assert [(s.path.name, s.kind, len(s.frame_files)) for s in sources] == [("clipA", "images", 3),
                                                                           ("clipB", "images", 3)]
    [only] = discover_inputs([str(tmp_path / "clipB")])
    assert only.kind == "images" and not only.error


def test_images_next_to_videos_are_not_an_image_folder(tmp_path: Path) -> None:
    touch(tmp_path / "clip.mp4")
    touch(tmp_path / "thumb.jpg")
    sources = discover_inputs([str(tmp_path)])
    assert [(s.path.name, s.kind) for s in sources] == [("clip.mp4", "video")]


def test_a_folder_whose_images_are_not_processed_is_said_once(tmp_path: Path) -> None:
    """JPEGImages/vidA/ with 4 frames and a stray preview.mp4: only the video ran, the frames were dropped without a
    word. Images beside a sub-folder are no input either."""
    for i in range(4):
        touch(tmp_path / "JPEGImages" / "vidA" / f"{i:05d}.jpg")
        touch(tmp_path / "JPEGImages" / "vidB" / f"{i:05d}.jpg")
    touch(tmp_path / "JPEGImages" / "vidA" / "preview.mp4")
    touch(tmp_path / "cover.jpg")  # beside the sub-folder JPEGImages
    warnings: list[str] = []
    sources = discover_inputs([str(tmp_path), str(tmp_path / "JPEGImages")], warnings=warnings)
    assert [(s.path.name, s.kind) for s in sources] == [("preview.mp4", "video"), ("vidB", "images")]
    rule = "(a folder of images is one video only when it holds no video and no sub-folder)"
    assert warnings == [
        f"{tmp_path}: its image is not processed: it holds a sub-folder too {rule}",
        f"{tmp_path / 'JPEGImages' / 'vidA'}: its 4 images are not processed: it holds a video too {rule}",
    ]
    quiet: list[str] = []
    discover_inputs([str(tmp_path / "JPEGImages" / "vidB")], warnings=quiet)
    assert quiet == []


def test_single_image_is_a_one_frame_video(tmp_path: Path) -> None:
    image = touch(tmp_path / "photo.jpg")
    [source] = discover_inputs([str(image)])
    assert source.kind == "images" and source.frame_files == (image,) and source.stem == "photo"


def test_glob_pattern_expands_and_skips_unknown_extensions(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "one.mp4")
    touch(tmp_path / "b" / "two.mp4")
    touch(tmp_path / "b" / "readme.txt")
    sources = discover_inputs([str(tmp_path / "**" / "*")])
    assert names(sources) == ["one.mp4", "two.mp4"]


def test_a_pattern_ending_in_an_extension_decodes_its_matches_whatever_that_extension(tmp_path: Path) -> None:
    """`segment 'gl/*.dat' b.mp4` segmented b.mp4 alone, without a word, where `segment gl/*.dat` (the shell's
    expansion) decoded gl/raw.dat: the user typed the extension, so its matches are decoded as files named are."""
    raw = touch(tmp_path / "gl" / "raw.dat")
    camera = touch(tmp_path / "gl" / "cam_01.insv")
    warnings: list[str] = []
    found = discover_inputs([str(tmp_path / "gl" / "*.dat"), str(tmp_path / "gl" / "cam_??.insv")], (), warnings)
    assert [(source.path, source.kind) for source in found] == [(raw, "video"), (camera, "video")]
    assert warnings == []


def test_a_pattern_naming_no_extension_says_which_matches_it_skipped(tmp_path: Path) -> None:
    """`'gl/*'` (no extension of its own) keeps the extension lists, but the matches it leaves out are said: one
    warning line per pattern with how many and one of them; `skipped_matches` names the pattern for an error."""
    from clipvis.cli.inputs import SkippedMatches, pattern_names_extension

    video = touch(tmp_path / "gl" / "b.mp4")
    raw = touch(tmp_path / "gl" / "raw.dat")
    touch(tmp_path / "gl" / "zz.dat")
    notes = touch(tmp_path / "other" / "notes")
    warnings: list[str] = []
    skipped: list[SkippedMatches] = []
    pattern, other = str(tmp_path / "gl" / "*.*"), str(tmp_path / "other" / "*")
    assert [s.path for s in discover_inputs([pattern, other], (), warnings, skipped)] == [video]
    assert warnings == [
        f"{pattern}: 2 matches skipped as not videos by their extension, such as {raw}; name the file, or end the "
        "pattern in .dat, to have it decoded",
        f"{other}: 1 match skipped as not a video by its extension: {notes}; name the file to have it decoded",
    ]
    assert [(entry.pattern, len(entry.files)) for entry in skipped] == [(pattern, 2), (other, 1)]
    for named in ("*.dat", "cam_??.insv", "a/**/*.MTS", "x.*/v.dat"):
        assert pattern_names_extension(named), named
    for unnamed in ("*", "**/*", "*.*", "*.[mM][pP]4", "a.d/*", "*.", "*/.hidden", "*.m?4"):
        assert not pattern_names_extension(unnamed), unnamed


def test_glob_lists_its_matches_in_the_order_of_the_folder_search(tmp_path: Path) -> None:
    """The matches were sorted as whole strings: 'tree/**/*.mp4' gave cam2/a, Cam10/a, cam/a ("cam2/" before "cam/")
    where `segment tree` gives cam/a, cam2/a, Cam10/a; so the same videos got other output folders (a, a-2, a-3)."""
    for folder in ("cam2", "Cam10", "cam"):
        touch(tmp_path / "tree" / folder / "a.mp4")
    touch(tmp_path / "tree" / "d.mp4")
    folder_order = [s.path for s in discover_inputs([str(tmp_path / "tree")])]
    assert [p.parent.name for p in folder_order] == ["cam", "cam2", "Cam10", "tree"]
    assert [s.path for s in discover_inputs([str(tmp_path / "tree" / "**" / "*.mp4")])] == folder_order


def test_a_recursive_glob_over_links_back_into_the_tree_ends(tmp_path: Path) -> None:
    """A tree with two links to `.`: `segment 'tree/**/*.mp4'` never ended (Python's glob follows directory links, a
    walk growing without end) where `segment tree` took seconds; both list the tree's video once now."""
    video = touch(tmp_path / "tree" / "d" / "z.mp4")
    (tmp_path / "tree" / "l1").symlink_to(".")
    (tmp_path / "tree" / "l2").symlink_to(".")
    (tmp_path / "tree" / "d" / "up").symlink_to("..")
    result: list[list[VideoSource]] = []
    walk = threading.Thread(target=lambda: result.append(discover_inputs([str(tmp_path / "tree" / "**" / "*.mp4")])),
                            daemon=True)
    walk.start()
    walk.join(10.0)
    assert result, "the glob's walk did not end"
    assert [s.path for s in result[0]] == [video] == [s.path for s in discover_inputs([str(tmp_path / "tree")])]


def test_glob_matches_what_python_s_glob_matches(tmp_path: Path, monkeypatch) -> None:
    """clipvis' glob (`glob_matches`, which does not loop over links) keeps glob.glob's rules: hidden names only by a
    part that starts with a dot, `**` for any number of folders (and everything below when last), classes, `?`."""
    import glob

    from clipvis.cli.inputs import glob_matches

    for name in ("v.mp4", "a/v1.mp4", "a/b/v2.mp4", "a/b/c/v3.MP4", ".hid/v4.mp4", "a/.h2/v5.mp4", "a/.v6.mp4",
                 "x y/v7.mp4", "a/b/c/n.txt"):
        touch(tmp_path / name)
    (tmp_path / "a" / "lb").symlink_to("b")  # a link within the tree is followed, as glob follows it
    monkeypatch.chdir(tmp_path)
    for pattern in ("**/*.mp4", "*.mp4", "a/**", "a/**/*.mp4", "**", "a/*/v2.mp4", "a/b/**/*", "**/.*", "a/.*",
                    "*/*.mp4", "a/b/c/*.[mM][pP]4", "a/[lb]*/*.mp4", "x y/*", "a/**/b/**/*.mp4", "nope/**/*.mp4",
                    "a/b/c/v3.MP4/*", "**/b", "**/**/*.mp4", "?.mp4", str(tmp_path / "**" / "*.mp4")):
        assert sorted(glob_matches(pattern)) == sorted(set(glob.glob(pattern, recursive=True))), pattern


def test_glob_without_match_is_a_failed_input(tmp_path: Path) -> None:
    [source] = discover_inputs([str(tmp_path / "*.mp4")])
    assert not source.ok and "no file matches" in source.error


def test_missing_path_is_reported_not_raised(tmp_path: Path) -> None:
    good = touch(tmp_path / "good.mp4")
    sources = discover_inputs([str(tmp_path / "missing.mp4"), str(good)])
    assert [s.ok for s in sources] == [False, True]
    message = sources[0].describe_error()
    assert "missing.mp4" in message and "no such file" in message and "\n" not in message


def test_empty_directory_is_a_failed_input(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    [source] = discover_inputs([str(tmp_path / "empty")])
    assert not source.ok and "no video files" in source.error


def test_broken_symlink_is_a_failed_input(tmp_path: Path) -> None:
    link = tmp_path / "link.mp4"
    link.symlink_to(tmp_path / "gone.mp4")
    [source] = discover_inputs([str(link)])
    assert not source.ok and "broken symbolic link" in source.error


def test_a_symbolic_link_loop_is_said_to_be_one(tmp_path: Path) -> None:
    """`ln -s loop loop; clipvis segment loop`, two links to each other, or a loop on the way to a file: each was
    called a broken symbolic link (or a missing file), where following the link never ends (ELOOP)."""
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    sources = discover_inputs([str(tmp_path / "loop"), str(tmp_path / "a"), str(tmp_path / "loop" / "x.mp4")])
    assert [source.error for source in sources] == ["symbolic-link loop"] * 3
    assert sources[0].describe_error() == f"{tmp_path / 'loop'}: symbolic-link loop"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_a_failed_input_at_once(tmp_path: Path) -> None:
    """A named pipe (mkfifo) hung the run for ever (the video is opened several times: probe, model, overlay), and a
    glob matched one too; it fails at once with what to do, the other inputs unaffected."""
    from clipvis.cli.video_io import VideoReadError, open_reader

    pipe = tmp_path / "pipe.ts"
    os.mkfifo(pipe)
    good = touch(tmp_path / "good.mp4")
    message = "a pipe, not a file: clipvis reads a video more than once; save it to a file first"
    for arguments in ([str(pipe), str(good)], [str(tmp_path / "*.ts"), str(good)]):
        sources = discover_inputs(arguments)
        assert [s.ok for s in sources] == [False, True] and sources[0].error == message
        assert sources[0].describe_error() == f"{pipe}: {message}"
        with pytest.raises(VideoReadError, match="a pipe, not a file"):
            open_reader(sources[0])


def test_stdin_dash_reads_one_argument_per_line(tmp_path: Path) -> None:
    first = touch(tmp_path / "first.mp4")
    folder = tmp_path / "frames"
    touch(folder / "1.jpg")
    stdin = io.StringIO(f"{first}\r\n\n{folder}\n{tmp_path / 'nope.mp4'}\n")
    sources = discover_inputs(["-"], read_argument_lines(stdin))
    assert [(s.path.name, s.kind, s.ok) for s in sources] == [
        ("first.mp4", "video", True),
        ("frames", "images", True),
        ("nope.mp4", "video", False),
    ]


def test_null_separated_stdin_keeps_newlines_and_blanks_in_names() -> None:
    """`--null`: entries end with NUL (find -print0), so a name may hold a newline, spaces or a CR."""
    stream = io.BytesIO(b"a\nb.mp4\0 spaced .mp4\0\0c\r.mp4\0")
    stream.buffer = stream  # a binary stream as sys.stdin.buffer
    assert read_argument_lines(stream, null=True) == ["a\nb.mp4", " spaced .mp4", "c\r.mp4"]
    assert read_argument_lines(io.StringIO("a.mp4\r\n\n b.mp4\n")) == ["a.mp4", " b.mp4"]
    assert read_argument_lines(io.StringIO("a.mp4\0\n"), null=True) == ["a.mp4"]  # a newline after the last NUL
    for made_without_print0 in ("a.mp4\n", "a.mp4\nb.mp4\n"):
        with pytest.raises(ValueError, match="holds newlines but no NUL character"):
            read_argument_lines(io.StringIO(made_without_print0), null=True)


def test_stdin_is_read_only_once(tmp_path: Path) -> None:
    clip = touch(tmp_path / "clip.mp4")
    stdin = io.StringIO(f"{clip}\n")
    assert len(discover_inputs(["-", "-"], read_argument_lines(stdin))) == 1


def test_duplicates_are_dropped_keeping_first_position(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = touch(tmp_path / "a.mp4")
    b = touch(tmp_path / "b.mp4")
    monkeypatch.chdir(tmp_path)
    sources = discover_inputs(["a.mp4", str(b), str(a), str(tmp_path), os.path.join(".", "b.mp4")])
    assert [s.path.resolve() for s in sources] == [a.resolve(), b.resolve()]


def test_symlink_loop_in_directory_terminates(tmp_path: Path) -> None:
    touch(tmp_path / "d" / "clip.mp4")
    (tmp_path / "d" / "loop").symlink_to(tmp_path / "d")
    assert names(discover_inputs([str(tmp_path / "d")])) == ["clip.mp4"]


def test_a_folder_reached_through_a_symlink_too_is_found_at_its_real_path(tmp_path: Path) -> None:
    """A folder the tree holds both directly and through a symbolic link is found at its own path, whatever comes first
    in the walk (a link whose name sorts first, a link in a folder walked before the real one); a folder that only a
    link reaches (outside the tree, hidden) is found through it; a link to a folder clipvis wrote is no input."""
    tree = tmp_path / "tree"
    touch(tree / "b" / "clip.mp4")
    touch(tree / "frames" / "0.jpg")
    touch(tree / "z" / "deep.mp4")
    touch(tree / ".hidden" / "only.mp4")
    touch(tmp_path / "elsewhere" / "far.mp4")
    touch(tmp_path / "output" / ".clipvis.lock")
    touch(tmp_path / "output" / "overlay.mp4")
    (tree / "0link").symlink_to("b")  # sorts before b
    (tree / "a").mkdir()
    (tree / "a" / "frames").symlink_to("../frames")  # an image folder, the link walked before tree/frames
    (tree / "a" / "zz").symlink_to("../z")  # a folder holding a video, the link walked before tree/z
    (tree / "a" / "hidden").symlink_to("../.hidden")
    (tree / "a" / "far").symlink_to(tmp_path / "elsewhere")
    (tree / "a" / "out").symlink_to(tmp_path / "output")
    found = [(source.path.relative_to(tree).as_posix(), source.kind) for source in discover_inputs([str(tree)])]
    assert found == [("a/far/far.mp4", "video"), ("a/hidden/only.mp4", "video"), ("b/clip.mp4", "video"),
                     ("frames", "images"), ("z/deep.mp4", "video")]


def test_stem_of_hidden_or_empty_name_is_usable(tmp_path: Path) -> None:
    assert VideoSource(tmp_path / ".mp4").stem == "mp4"
    assert VideoSource(tmp_path / "..mp4").stem == "video"


def test_size_estimate_orders_inputs_for_torchrun_ranks(tmp_path: Path) -> None:
    """Bytes of the file; an image folder's frame count times its first frame's size; 0 for an unusable input."""
    (tmp_path / "clip.mp4").write_bytes(b"x" * 1000)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        (frames / f"{i}.jpg").write_bytes(b"x" * (100 + i))
    video, folder, missing = discover_inputs(
        [str(tmp_path / "clip.mp4"), str(frames), str(tmp_path / "missing.mp4")]
    )
    assert (video.size_estimate(), folder.size_estimate(), missing.size_estimate()) == (1000, 300, 0)


def test_a_home_folder_of_no_user_is_a_missing_path_not_a_crash() -> None:
    """`~nosuchuser/clip.mp4` raised RuntimeError ('Could not determine home directory') out of discover_inputs."""
    [source] = discover_inputs(["~no-such-user-clipvis/clip.mp4"])
    assert source.error == "no such file or directory" and str(source.path) == "~no-such-user-clipvis/clip.mp4"


def test_netpbm_frames_are_frames_and_a_folder_without_inputs_says_what_would_be(tmp_path: Path) -> None:
    """A folder of .ppm frames (robotics datasets) was "no video files or image folders", and a .ppm among JPEGs was
    left out silently, shifting every later frame."""
    folder = tmp_path / "seq"
    for name in ["0.jpg", "1.jpg", "2.ppm", "3.pgm", "4.jpg"]:
        touch(folder / name)
    [source] = discover_inputs([str(folder)])
    assert [p.name for p in source.frame_files] == ["0.jpg", "1.jpg", "2.ppm", "3.pgm", "4.jpg"]
    touch(tmp_path / "raw" / "0.exr")
    [source] = discover_inputs([str(tmp_path / "raw")])
    assert not source.ok and "(images: .bmp, .jfif, .jpe, .jpeg, .jpg, " in source.error
    assert "; videos: .264, .265, .3g2, .3gp, " in source.error


def test_a_broken_link_among_the_frames_is_listed_not_left_out(tmp_path: Path) -> None:
    """A dangling symbolic link frame was dropped without a word: frames 1, 2, 4 became frames 0, 1, 2."""
    folder = tmp_path / "seq"
    for name in ["1.jpg", "2.jpg", "4.jpg"]:
        touch(folder / name)
    (folder / "3.jpg").symlink_to(tmp_path / "gone.jpg")
    assert [p.name for p in list_image_frames(folder)] == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]


def test_an_image_folder_given_as_dot_is_named_after_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`clipvis segment .` inside an image folder named its outputs `video/` (and `video/1.jpg` in file_names)."""
    folder = tmp_path / "street"
    touch(folder / "sub" / "1.jpg")
    monkeypatch.chdir(folder / "sub")
    [source] = discover_inputs(["."])
    assert source.kind == "images" and source.stem == "sub"
    [source] = discover_inputs([".."])  # a folder of folders: each frame folder by its own name
    assert source.stem == "sub"


def test_a_folder_search_takes_the_containers_and_raw_streams_ffmpeg_reads(tmp_path) -> None:
    """.mxf, .vob, .h264 and others were skipped by a folder's search without a word (each decodes when named)."""
    names = ["a.MXF", "b.vob", "c.h264", "d.hevc", "e.3g2", "f.ivf", "g.qt", "notes.txt", "meta.json"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    found = sorted(source.path.name for source in discover_inputs([str(tmp_path)]))
    assert found == sorted(names[:7])


@pytest.mark.parametrize(("name", "container_format", "codec"), [
    ("cam.MOD", "vob", "mpeg2video"),  # JVC/Panasonic SD camcorders: MPEG-2 program stream
    ("cam.TOD", "mpegts", "mpeg2video"),  # JVC HD camcorders: MPEG-2 transport stream
    ("cam.insv", "mp4", "mpeg4"),  # Insta360: MP4
    ("cam.rmvb", "rm", "rv20"),  # RealMedia
])
def test_a_folder_search_takes_camera_and_realmedia_files(tmp_path, name, container_format, codec) -> None:
    """.MOD, .TOD, .insv and .rmvb files decoded when named but a folder's search skipped them."""
    from clipvis.cli.video_io import open_reader

    from .conftest import bar_frame, write_video

    write_video(tmp_path / name, [bar_frame(i, 48, 64) for i in range(30)], codec=codec,
                container_format=container_format)  # (a transport stream of a few frames is too short to probe)
    [source] = discover_inputs([str(tmp_path)])
    assert source.path.name == name and source.kind == "video"
    assert sum(1 for _ in open_reader(source)) == 30


def test_files_clipvis_wrote_are_no_inputs_when_a_list_or_a_pattern_gives_them(tmp_path: Path) -> None:
    """README's `find . -name '*.mp4' | clipvis segment - -o clipvis_out` run a second time in the project folder
    segmented `clipvis_out/a/overlay.mp4` into `clipvis_out/overlay/` (and a third run into `overlay-2/`), where a
    folder search leaves the folders clipvis made out. Named as an argument, such a file is still an input."""
    video = touch(tmp_path / "a.mp4")
    overlay = touch(tmp_path / "clipvis_out" / "a" / "overlay.mp4")
    touch(tmp_path / "clipvis_out" / "a" / ".clipvis.lock", b"")
    touch(tmp_path / "clipvis_out" / "a" / "run.json", b"{}")
    touch(tmp_path / "clipvis_out" / ".clipvis.lock", b"")
    warnings: list[str] = []
    found = discover_inputs(["-"], [str(video), str(overlay)], warnings)
    assert [source.path for source in found] == [video]
    assert warnings == [f"{overlay}: skipped: a file clipvis wrote (in {overlay.parent}, a folder of its outputs); "
                        "name it as an argument to segment it"]
    warnings.clear()
    assert [source.path for source in discover_inputs([str(tmp_path / "**" / "*.mp4")], (), warnings)] == [video]
    assert len(warnings) == 1
    assert [source.path for source in discover_inputs([str(overlay)])] == [overlay]
    assert [source.path for source in discover_inputs([str(tmp_path)])] == [video]  # the folder search, as before


def test_videos_in_an_output_root_are_inputs_of_a_list_or_a_pattern(tmp_path: Path) -> None:
    """`clipvis segment a.mp4 -o .` then `clipvis segment '*.mp4' -o .`: the output root's lock made its own videos
    "files clipvis wrote" (review13); only a video's output folder or an export folder (their records) holds them."""
    from clipvis.cli.exporters.export_record import EXPORT_RECORD
    from clipvis.cli.inputs import OUTPUT_FOLDER_RECORDS
    from clipvis.cli.writers.layout import MANIFEST_NAME

    assert set(OUTPUT_FOLDER_RECORDS) == {MANIFEST_NAME, EXPORT_RECORD}
    videos = [touch(tmp_path / "a.mp4"), touch(tmp_path / "b.mp4")]
    touch(tmp_path / ".clipvis.lock", b"")
    touch(tmp_path / "a" / ".clipvis.lock", b"")
    touch(tmp_path / "a" / "run.json", b"{}")
    mask = touch(tmp_path / "a" / "png-masks" / "00000.png")
    warnings: list[str] = []
    assert [source.path for source in discover_inputs([str(tmp_path / "*.mp4")], (), warnings)] == videos
    assert [source.path for source in discover_inputs(["-"], [str(v) for v in videos], warnings)] == videos
    assert warnings == []
    assert discover_inputs(["-"], [str(mask)], warnings) == [] and len(warnings) == 1


def _output_folder(folder: Path, video: Path, lock: bool = True) -> Path:
    """A video's output folder as `clipvis segment` leaves it (``lock``: with its hidden lock file)."""
    import json

    touch(folder / "overlay.mp4")
    record = {"manifest_version": 1, "config_hash": "0" * 64, "input": str(video), "stem": folder.name,
              "outputs": ["overlay.mp4"], "status": "complete"}
    touch(folder / "run.json", json.dumps(record).encode())
    if lock:
        touch(folder / ".clipvis.lock", b"")
    return folder


def test_folders_clipvis_made_are_skipped_when_named_or_matched(tmp_path: Path) -> None:
    """`clipvis segment data/* -o data/out` run again: the pattern matched the output root, which failed the rerun
    ("directory holds no video files"), and a pattern or an argument naming a video's output folder (`'v3/*'` with
    -o v3/out, `v3/clip`) segmented its overlay.mp4. Each is skipped with one note; an output root that also holds
    your videos (`-o .`) is searched as before."""
    data = tmp_path / "data"
    videos = [touch(data / "a.mp4"), touch(data / "b.mp4")]
    touch(data / "out" / ".clipvis.lock", b"")
    touch(data / "out" / ".clipvis.folders", b'"a"\n')
    _output_folder(data / "out" / "a", videos[0])
    _output_folder(data / "clip", videos[1])  # an output folder beside the videos (`-o data`)
    notes: list[str] = []
    found = discover_inputs([str(data / "*")], notes=notes)
    assert [source.path for source in found] == videos and all(source.ok for source in found)
    assert notes == [f"skipped: {data / 'clip'} is a clipvis output folder",
                     f"skipped: {data / 'out'} is a clipvis output folder"]
    notes.clear()
    assert discover_inputs([str(data / "out"), str(data / "out" / "a")], notes=notes) == []
    assert notes == [f"skipped: {data / 'out'} is a clipvis output folder",
                     f"skipped: {data / 'out' / 'a'} is a clipvis output folder"]
    touch(data / "out" / "c.mp4")  # `-o .`: an output root holding videos of your own is searched
    assert [source.path for source in discover_inputs([str(data / "out")])] == [data / "out" / "c.mp4"]


def test_an_output_folder_copied_without_its_lock_is_still_no_input(tmp_path: Path) -> None:
    """`rsync -a --exclude '.*' results/ copy/`: the hidden lock file stays behind, and a folder search took the
    copy's overlay.mp4 for a video. A run.json holding clipvis' manifest fields marks the folder; a run.json of
    another tool does not."""
    video = touch(tmp_path / "copy" / "a.mp4")
    _output_folder(tmp_path / "copy" / "a", video, lock=False)
    mine = touch(tmp_path / "copy" / "mine" / "take.mp4")
    touch(tmp_path / "copy" / "mine" / "run.json", b'{"input": "take.mp4", "status": "complete"}')
    assert [source.path for source in discover_inputs([str(tmp_path / "copy")])] == [video, mine]
    notes: list[str] = []
    assert discover_inputs([str(tmp_path / "copy" / "a")], notes=notes) == [] and len(notes) == 1


def test_an_image_folder_says_which_photos_it_cannot_read(tmp_path: Path) -> None:
    """f0.jpg f1.heic f2.jpg: f2 became frame 1 without a word. A .jfif / .jpe is a JPEG, read as one; a folder's
    other files (Thumbs.db, notes) are no images, left out silently."""
    folder = tmp_path / "seq"
    for name in ["f0.jpg", "f1.heic", "f2.jpg", "f3.jfif", "f4.jpe", "f10.HEIC", "Thumbs.db", "notes.txt"]:
        touch(folder / name)
    warnings: list[str] = []
    [source] = discover_inputs([str(folder)], warnings=warnings)
    assert [p.name for p in source.frame_files] == ["f0.jpg", "f2.jpg", "f3.jfif", "f4.jpe"]
    assert warnings == [f"{folder}: 2 images left out, such as f1.heic: clipvis does not read .heic images, so the "
                        "video has no frame for them (convert such images to .png or .jpg to keep every frame)"]
    (folder / "f1.heic").unlink()
    (folder / "f10.HEIC").unlink()
    quiet: list[str] = []
    discover_inputs([str(folder)], warnings=quiet)
    assert quiet == []
    # a folder of .heic photos alone (an iPhone export) was no input without a word of why (review 236)
    photos = tmp_path / "photos" / "iphone"
    for name in ["IMG_0001.HEIC", "IMG_0002.HEIC"]:
        touch(photos / name)
    touch(tmp_path / "photos" / "clip.mp4")
    said: list[str] = []
    found = discover_inputs([str(tmp_path / "photos")], warnings=said)
    assert [source.path.name for source in found] == ["clip.mp4"]
    assert said == [f"{photos}: 2 images left out, such as IMG_0001.HEIC: clipvis does not read .heic images, so the "
                    "folder is no image-folder input (convert them to .png or .jpg to segment it)"]
