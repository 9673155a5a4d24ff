"""What the CLI shows of the logging of open_clip and huggingface_hub while a CLIP's weights are fetched.

Offline, huggingface_hub logs two WARNING lines per failed request (the error, then "Retrying in 8s [Retry 4/5]"),
~40 in all, and open_clip logs its download error on the root logger (``ERROR:root:Failed to download ...``) before
raising it; a command said them all on stderr (under ``--log-format jsonl`` too), then its own error line. Within
:func:`clip_fetch_logging` the first failed request is said once, by the command's ``say`` (a `clipvis: warning:`
line, a jsonl `warning` event), and the rest of the failures and retries are left out (other huggingface_hub
warnings are said once each); open_clip's download error is left to
the error the command says (clipvis.model.build.ClipFetchError). The library's own logging is untouched outside it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from clipvis.weights import OFFLINE_ENV

#: The logger huggingface_hub logs under (its modules' loggers are below it)
HUB_LOGGER = "huggingface_hub"
#: How open_clip's download error starts (open_clip/factory.py, create_model)
OPEN_CLIP_DOWNLOAD_ERROR = "Failed to download weights for tag"


class _FirstHubWarning(logging.Handler):
    """Says huggingface_hub's WARNING-or-worse records as ``Hugging Face: <message>``: of a request's failures and
    retries (huggingface_hub/utils/_http.py: "... thrown while requesting ...", "Rate limited. Waiting ...",
    "Retrying in ...") the first failure only, said to be retried; other warnings (the hf_xet fallback notice, which a
    fetch that succeeds follows) once each, as they are."""

    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.say = say
        self.said_retrying = False
        self.said: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = " ".join(record.getMessage().split())
        if message.startswith("Retrying in "):
            return
        if " thrown while requesting " in message or message.startswith("Rate limited. "):
            if not self.said_retrying:
                self.said_retrying = True
                self.say(f"Hugging Face: {message} (retrying, for up to about a minute; a failure is said once "
                         f"all tries are over; {OFFLINE_ENV}=1 skips the network: a CLIP in the Hugging Face cache is "
                         "read from it, another refused at once)")
            return
        if message not in self.said:
            self.said.add(message)
            self.say(f"Hugging Face: {message}")


class _RootRecords(logging.Handler):
    """Stands in for Python's last-resort handler while the root logger has none: open_clip's download error is left
    out (the command's error says it), its other warnings are said by ``say``, other loggers' records go where they
    would have gone (``logging.lastResort``). Keeps ``logging.error`` from installing a stderr handler for the rest
    of the run (``basicConfig``)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.say = say

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != "root":
            if logging.lastResort is not None and record.levelno >= logging.lastResort.level:
                logging.lastResort.handle(record)
            return
        message = " ".join(record.getMessage().split())
        if not message.startswith(OPEN_CLIP_DOWNLOAD_ERROR):
            self.say(message)


def _not_download_error(record: logging.LogRecord) -> bool:
    return not (record.name == "root" and record.getMessage().startswith(OPEN_CLIP_DOWNLOAD_ERROR))


@contextmanager
def clip_fetch_logging(say: Callable[[str], None]) -> Iterator[None]:
    """While a model is built (a CLIP may be fetched): huggingface_hub's first failed request said by ``say``, its
    retries and open_clip's download error left out, its other warnings said once each (see the module's docstring);
    the loggers as they were afterwards."""
    try:  # huggingface_hub gives its logger a stderr handler when first imported (inside open_clip's fetch, which
        import huggingface_hub.utils.logging  # noqa: F401 - would then print every retry): configured before
    except ImportError:  # open_clip without huggingface_hub: nothing of it to quiet
        pass
    hub = logging.getLogger(HUB_LOGGER)
    root = logging.getLogger()
    hub_handlers, hub_propagate = hub.handlers[:], hub.propagate
    hub.handlers = [_FirstHubWarning(say)]
    hub.propagate = False
    stand_in = _RootRecords(say) if not root.handlers else None
    if stand_in is not None:
        root.addHandler(stand_in)
    root.addFilter(_not_download_error)
    try:
        yield
    finally:
        root.removeFilter(_not_download_error)
        if stand_in is not None:
            root.removeHandler(stand_in)
        hub.handlers = hub_handlers
        hub.propagate = hub_propagate
