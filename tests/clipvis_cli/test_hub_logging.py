"""What clip_fetch_logging says of huggingface_hub's warnings while a CLIP is fetched."""

from __future__ import annotations

import logging

from clipvis.cli.hub_logging import clip_fetch_logging

XET_NOTICE = ("Xet Storage is enabled for this repo, but the 'hf_xet' package is not installed. Falling back to "
              "regular HTTP download.")


def test_a_warning_that_is_no_retry_is_said_as_it_is_once() -> None:
    """The hf_xet fallback notice (a fetch that then succeeds) was said with '(retrying; a failure is said once all
    tries are over)', and a second, different warning was not said at all."""
    said: list[str] = []
    log = logging.getLogger("huggingface_hub.file_download")
    with clip_fetch_logging(said.append):
        log.warning(XET_NOTICE)
        log.warning(XET_NOTICE)
        log.warning("another notice")
    assert said == [f"Hugging Face: {XET_NOTICE}", "Hugging Face: another notice"]


def test_of_failed_requests_and_their_retries_the_first_is_said_to_be_retried() -> None:
    """Without a connection huggingface_hub retries for ~20-70 s after that line; it did not say how to skip that."""
    said: list[str] = []
    log = logging.getLogger("huggingface_hub.utils._http")
    with clip_fetch_logging(said.append):
        for attempt in range(1, 4):
            log.warning("'[Errno -2] Name or service not known' thrown while requesting HEAD https://huggingface.co/x")
            log.warning("Retrying in %ds [Retry %d/5].", attempt, attempt)
    assert said == ["Hugging Face: '[Errno -2] Name or service not known' thrown while requesting HEAD "
                    "https://huggingface.co/x (retrying, for up to about a minute; a failure is said once all tries "
                    "are over; CLIPVIS_OFFLINE=1 skips the network: a CLIP in the Hugging Face cache is read from it, "
                    "another refused at once)"]
