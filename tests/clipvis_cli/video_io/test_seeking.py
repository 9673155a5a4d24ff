"""VideoFrameSeeker (clipvis.cli.video_io.seeking), on synthetic files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipvis.cli.video_io import VideoReader


def test_the_frame_seeker_gives_segment_s_frames_of_an_mpeg_program_stream(tmp_path: Path, synth) -> None:
    """After a seek in an MPEG program stream (.mpg, .vob: DVDs, camcorders) FFmpeg gives each frame the timestamp
    the frame before it had in a reading from the start: training's frame seeker returned frame n - 1 for frame n
    (9 of 40 frames here), so a frame's masks were paired with the picture before it, silently."""
    import av

    from clipvis.cli.video_io import VideoFrameSeeker

    path = tmp_path / "home.mpg"
    with av.open(str(path), "w", format="mpeg") as output:
        stream = output.add_stream("mpeg2video", rate=25, options={"bf": "2", "g": "15"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(40):
            image = synth.bar_frame(i % 14, 48, 64)
            image[:8, :i] = 200  # every frame its own picture
            output.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        output.mux(stream.encode())
    expected = [image for _, image in VideoReader(path)]
    assert len(expected) == 40
    seeker = VideoFrameSeeker()
    wrong = [index for index in range(40) if not np.array_equal(seeker.frame(path, index), expected[index])]
    assert wrong == []


def test_the_frame_seeker_reads_palette_videos_and_keeps_what_it_learned_of_many_files(tmp_path: Path, synth,
                                                                                      monkeypatch) -> None:
    """A palette (pal8) video's frames crashed training with a traceback: the picture digest took the (image,
    palette) pair PyAV gives such a frame for an array. And the seeker kept what it learned of 8 files: training over
    more videos decoded a whole video again each time it came back to it."""

    from clipvis.cli.video_io import VideoFrameSeeker, seeking

    animation = synth.write_palette_video(tmp_path / "palette.avi", 6)
    expected = [image for _, image in VideoReader(animation)]
    seeker = VideoFrameSeeker()
    assert all(np.array_equal(seeker.frame(animation, index), expected[index]) for index in (5, 0, 3))

    videos = [synth.write_bar_video(tmp_path / f"v{k}.mkv", 3) for k in range(12)]
    for video in videos:
        seeker.frame(video, 0)
    with monkeypatch.context() as patch:
        patch.setattr(seeking, "_learn_frames", lambda path: pytest.fail(f"{path} learned again"))
        assert [synth.bar_index(seeker.frame(video, 2)) for video in videos] == [2] * 12
    learn, learned = seeking._learn_frames, []
    monkeypatch.setattr(seeking, "_learn_frames", lambda path: learned.append(path.name) or learn(path))
    small = VideoFrameSeeker(frames=9)  # a budget of frames (3, 3 and 6 here): the files used longest ago go
    for video in (videos[0], videos[1], videos[0], animation, videos[0], videos[1]):
        small.frame(video, 0)
    assert learned == ["v0.mkv", "v1.mkv", "palette.avi", "v1.mkv"]
