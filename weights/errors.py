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


class WeightsNotAvailableError(WeightsError, RuntimeError):
    """A released checkpoint is not in the local cache and could not be downloaded."""

    def __init__(
        self, message: str, *, checkpoint: str, url: str, target: str, reason: str | None = None,
        remedy: str | None = None,
    ) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint
        self.url = url
        self.target = target
        #: Why it is not available (the message's first part), and what the message says to do (None: the usual).
        self.reason = reason
        self.remedy = remedy
