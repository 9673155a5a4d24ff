"""clipvis command-line application: commands, video I/O, writers, datasets and evaluation."""

from clipvis import __version__

__all__ = ["__version__"]
