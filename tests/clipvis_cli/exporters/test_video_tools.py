"""`clipvis.cli.exporters.video_tools`: Label Studio's frame numbers for a video's frame times from Python (the export
command's tests: commands/test_export.py)."""

from __future__ import annotations

from clipvis.cli.exporters.video_tools import label_studio_frame_numbers


def test_label_studio_numbers_a_variable_rate_video_s_frames_by_the_picture_it_shows() -> None:
    """Frames closer together than Label Studio's frames took the next numbers, so every later box sat on another
    picture, and the last ones past the video's end (20 frames crowded at the end of a 1.139 s video at 17.2 frames/s:
    frames 21-23 of a video with 20; 10 of 20 boxes on the wrong picture)."""
    fps = 20 / 1.162
    times = [0.0, 0.058, 0.116, 0.175, 0.232, 0.29, 0.349, 0.406, 0.465, 0.523, 0.581, 0.639, 0.697, 0.755,
             0.813, 0.871, 1.062, 1.095, 1.128, 1.138]
    numbers = label_studio_frame_numbers(times, fps)
    for position, number in enumerate(numbers):
        if number is None:  # the next frame's picture is up by the time Label Studio's next frame comes
            following = numbers[position + 1]
            assert following is not None and times[position + 1] <= (following - 1) / fps + 0.1 / fps
            continue
        shown_at = (number - 1) / fps
        assert times[position] - 0.1 / fps <= shown_at  # at or after its time (a tenth of a frame's rounding)
        assert position + 1 == len(times) or shown_at < times[position + 1] - 0.1 / fps  # before the next one's
    assert numbers[:16] == list(range(1, 17)) and numbers[16:] == [None, 20, None, 21]
    assert label_studio_frame_numbers([0.0, 0.033, 0.067, 0.1, 0.133], 30.0) == [1, 2, 3, 4, 5]  # ms time base
