"""Errors raised while looking up or locating CLIP-VIS checkpoints.

Every error message is a single line meant to be shown to a user as-is.
"""

from __future__ import annotations


class WeightsError(Exception):
    """Base class of every error raised by the `weights` package."""


class UnknownCheckpointError(WeightsError, ValueError):
    """A name is neither a released checkpoint nor (for the resolver) an existing path."""


class InvalidWeightsError(WeightsError, ValueError):
    """A path exists but does not lead to a usable checkpoint file."""


class CacheLocationError(WeightsError, ValueError):
    """The cache folder cannot be located: ``CLIPVIS_CACHE`` names ``~user`` of no such user, or there is no home
    folder to put the default cache in."""


#: How giving a checkpoint file's path instead of a released name is worded for a Python caller
#: (`WeightsNotAvailableError.worded`: a front end words it as its own option, such as ``--weights PATH``).
PATH_IN_PYTHON = "load_model(PATH) in Python"


class WeightsNotAvailableError(WeightsError, RuntimeError):
    """A released checkpoint is not in the local cache and could not be downloaded.

    Made from its fields (``message`` None), its message says why (``reason``), what to do (``remedy``; None: download
    it by hand from ``url`` and save it as ``target``), or to give a checkpoint file's path instead of the name, that
    last part worded for a Python caller (`PATH_IN_PYTHON`); `worded` words it with a front end's option."""

    def __init__(
        self, message: str | None = None, *, checkpoint: str, url: str, target: str, reason: str | None = None,
        remedy: str | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.url = url
        self.target = target
        #: Why it is not available (the message's first part), and what the message says to do (None: the usual).
        self.reason = reason
        self.remedy = remedy
        self._given = message  # a message given whole: said as it is, whatever the front end
        super().__init__(self.worded())

    def worded(self, path_option: str = PATH_IN_PYTHON) -> str:
        """The message, giving a checkpoint file's path worded as ``path_option`` (a command line's ``--weights
        PATH``) where `PATH_IN_PYTHON` words it for a Python caller."""
        if self._given is not None:
            return self._given
        said = self.remedy or f"Download it by hand from {self.url} and save it as {self.target}"
        return (f"checkpoint {self.checkpoint!r} is not available: {self.reason}. {said}, or give the path of a "
                f"checkpoint file you already have instead of the name ({path_option}).")
