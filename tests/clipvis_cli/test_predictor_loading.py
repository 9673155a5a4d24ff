"""clipvis.cli.predictor_loading: the predictor a run is given."""

from __future__ import annotations

from clipvis.cli.predictor_loading import load_predictor
from clipvis.cli.segment import SegmentOptions


def test_the_predictor_runs_the_network_on_the_batches_of_batch_frames_whole(tiny_weights) -> None:
    """The predictor runs at most its own ``batch_frames`` frames through the network at once (8 by default): a run's
    ``--batch-frames 16`` would have been split in two, other batches (other float sums) and another speed."""
    for batch_frames in (16, 1):
        predictor = load_predictor(SegmentOptions(vocabulary=["cat"], weights=str(tiny_weights),
                                                  batch_frames=batch_frames))
        assert predictor.batch_frames == batch_frames
