"""DatasetInference's protocol between torchrun ranks, with the ranks as threads of this process (DistributedRun over
a barrier instead of gloo): however a rank fails, every rank makes the same gathers and ends (none waits for a
gather the others never make), and only the failing rank raises its own error; the others raise OtherRankFailed."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from clipvis.cli.atomic import OutputNotWritableError
from clipvis.cli.dataset_inference import RESULTS_NAME, DatasetInference, DatasetRunSummary, PerVideoFileError
from clipvis.cli.datasets import dataset_inputs
from clipvis.cli.distributed import InputsDifferError, OtherRankFailed
from clipvis.cli.predictor_loading import load_predictor
from clipvis.cli.progress import JsonlReporter
from clipvis.cli.segment import SegmentOptions

from .test_evaluate_dataset import make_lvvis
from .thread_ranks import ThreadJob, ThreadRanks


@pytest.fixture
def lvvis(tmp_path, tiny_weights, isolated_cache):
    """Two ranks' DatasetInference over the 2-video LV-VIS fixture (one video each)."""
    inputs = dataset_inputs("lvvis_val", make_lvvis(tmp_path / "datasets").parents[2])
    options = SegmentOptions(
        vocabulary=inputs.vocabulary, weights=str(tiny_weights), output=tmp_path / "out", formats=(), device="cpu",
        exact=True, skip_existing=True,
    )
    predictor = load_predictor(options)
    return [DatasetInference(predictor, inputs, options, JsonlReporter(io.StringIO())) for _ in range(2)]


def run_ranks(runners: list[DatasetInference], output: Path, conclude=None) -> tuple[list[Any], ThreadRanks]:
    """Each rank's summary or the exception it raised, and the gathers made."""
    ranks = ThreadRanks(len(runners))

    def rank(r: int) -> Any:
        job = ThreadJob(ranks, r)
        try:
            with job.joined():
                return runners[r].run(output, job=job, conclude=conclude)
        except Exception as error:  # noqa: BLE001 - the outcome under test
            return error

    with ThreadPoolExecutor(len(runners)) as pool:
        return list(pool.map(rank, range(len(runners)))), ranks


def test_ranks_agree_and_rank_0_concludes_for_the_job(lvvis, tmp_path) -> None:
    concluded: list[DatasetRunSummary] = []
    outcomes, ranks = run_ranks(lvvis, tmp_path / "out", conclude=concluded.append)
    assert [type(o) for o in outcomes] == [DatasetRunSummary, DatasetRunSummary]
    assert outcomes[0].main and not outcomes[1].main and (outcomes[0].computed, outcomes[1].computed) == (2, 2)
    assert concluded == [outcomes[0]] and outcomes[0].results_path == tmp_path / "out" / RESULTS_NAME
    assert {entry["video_id"] for entry in outcomes[0].results} == {1, 2}
    assert ranks.gathers == [3, 3]


def test_a_failing_conclusion_of_rank_0_ends_every_rank(lvvis, tmp_path) -> None:
    def conclude(summary: DatasetRunSummary) -> None:
        raise OutputNotWritableError(tmp_path / "metrics.json", "disk full")

    outcomes, ranks = run_ranks(lvvis, tmp_path / "out", conclude)
    assert isinstance(outcomes[0], OutputNotWritableError) and isinstance(outcomes[1], OtherRankFailed)
    assert ranks.gathers == [3, 3]


@pytest.mark.parametrize("failing_rank", [0, 1])
def test_a_rank_that_cannot_write_its_videos_ends_every_rank(lvvis, tmp_path, failing_rank) -> None:
    """Its per-video file not writable (an error that ends the run, not one video): that rank raises it, the
    others stop at the next gather instead of waiting there for it."""

    def unwritable(video):
        raise OutputNotWritableError(tmp_path / "out" / "per_video" / f"{video.id}.json", "disk full")

    lvvis[failing_rank].run_video = unwritable
    outcomes, ranks = run_ranks(lvvis, tmp_path / "out")
    assert isinstance(outcomes[failing_rank], OutputNotWritableError)
    assert isinstance(outcomes[1 - failing_rank], OtherRankFailed)
    assert ranks.gathers == [2, 2] and not (tmp_path / "out" / RESULTS_NAME).exists()


@pytest.mark.parametrize("failing_rank", [0, 1])
def test_a_rank_that_fails_before_its_run_ends_every_rank(lvvis, tmp_path, failing_rank) -> None:
    """A failure on one rank before DatasetInference runs (its copy of the dataset, CUDA, the weights on one
    machine): the others stop at the run's first gather; no video is run."""

    def broken_setup(*args, **kwargs):
        raise OutputNotWritableError(tmp_path / "weights", "not on this machine")

    lvvis[failing_rank].run = broken_setup
    outcomes, ranks = run_ranks(lvvis, tmp_path / "out")
    assert isinstance(outcomes[failing_rank], OutputNotWritableError)
    assert isinstance(outcomes[1 - failing_rank], OtherRankFailed)
    assert ranks.gathers == [1, 1] and not list((tmp_path / "out").rglob("[0-9]*.json"))


def test_per_video_files_rank_0_cannot_see_end_every_rank_with_one_line(lvvis, tmp_path) -> None:
    """Machines without a shared output folder: rank 1's per-video file is not there for rank 0. Rank 0 says which
    file and why in one line (no traceback); rank 1 stops at the last gather; no results.json."""
    taken_by_1 = ran_one_on_1(lvvis)
    own_videos = lvvis[1]._run_videos

    def elsewhere(videos, cache, **options):
        outcome = own_videos(videos, cache, **options)
        for video_id in taken_by_1:
            (cache / f"{video_id}.json").unlink()  # written on "another machine"
        return outcome

    lvvis[1]._run_videos = elsewhere
    outcomes, ranks = run_ranks(lvvis, tmp_path / "out")
    assert isinstance(outcomes[0], PerVideoFileError) and isinstance(outcomes[1], OtherRankFailed)
    assert f"{taken_by_1[0]}.json: written by another process but not found here" in str(outcomes[0])
    assert ranks.gathers == [3, 3] and not (tmp_path / "out" / RESULTS_NAME).exists()


def ran_one_on_1(runners: list[DatasetInference]) -> list[int]:
    """Make rank 0 wait in its first video until rank 1 took one, so that each rank runs one of the two videos; the
    ids of rank 1's videos."""
    taken_by_1: list[int] = []
    rank_1_took_one = threading.Event()
    own_run = [runner.run_video for runner in runners]

    def run_on_0(video):
        assert rank_1_took_one.wait(20)
        return own_run[0](video)

    def run_on_1(video):
        taken_by_1.append(video.id)
        rank_1_took_one.set()
        return own_run[1](video)

    runners[0].run_video, runners[1].run_video = run_on_0, run_on_1
    return taken_by_1


def test_a_rank_that_is_free_takes_the_next_video(lvvis, tmp_path) -> None:
    """Rank 0 busy with a video: rank 1 takes the other; each video runs once; results.json as one process writes."""
    taken_by_1 = ran_one_on_1(lvvis)
    outcomes, _ = run_ranks(lvvis, tmp_path / "out")
    assert [type(o) for o in outcomes] == [DatasetRunSummary, DatasetRunSummary]
    assert (outcomes[0].computed, outcomes[0].reused) == (2, 0) and len(taken_by_1) == 1
    assert [entry["video_id"] for entry in outcomes[0].results] == sorted(
        entry["video_id"] for entry in outcomes[0].results
    )


def test_a_rank_that_reads_other_videos_stops_with_one_line(lvvis, tmp_path) -> None:
    """Rank 1's ground truth lists other videos (another copy of the dataset on its machine): the same position
    would be another video there, so it stops with one line naming the file; rank 0 stops at the next gather."""
    own_videos = lvvis[1].videos_to_run
    lvvis[1].videos_to_run = lambda max_videos: own_videos(max_videos)[:1]
    outcomes, ranks = run_ranks(lvvis, tmp_path / "out")
    assert isinstance(outcomes[1], InputsDifferError) and isinstance(outcomes[0], OtherRankFailed)
    assert str(outcomes[1]).startswith(f"{lvvis[1].inputs.gt_path}: other videos than rank 0's: rank 1 finds 1")
    assert "\n" not in str(outcomes[1]) and ranks.gathers == [2, 2]
    assert not (tmp_path / "out" / RESULTS_NAME).exists()
