"""clipvis command-line application: commands, video I/O, writers, datasets and evaluation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clipvis")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
