"""The `clipvis` command's entry point (also `python -m clipvis` and every `torchrun -m clipvis` rank).

Process-wide settings that must come before any other thread exists are made here, before the application (and
with it torch, numpy and PyAV) is imported: one glibc malloc arena for every thread (clipvis.cli.memory,
``share_one_malloc_arena``). Python's garbage collector is paused while the application is imported, and what the
imports made is frozen then and again at exit (clipvis.cli.collector: ~1 s less per process). Kept out of
``clipvis.cli.app`` so that importing the application as a library changes nothing about the importing process.
"""

from __future__ import annotations

from clipvis.cli.collector import collector_paused, freeze_before_exit
from clipvis.cli.memory import share_one_malloc_arena


def main() -> None:
    """Run the `clipvis` application with the process set up for it."""
    share_one_malloc_arena()
    with collector_paused(freeze=True):  # torch, numpy, PyAV, typer: objects that live as long as the process
        from clipvis.cli.app import main as run_application
    try:
        run_application()
    finally:
        freeze_before_exit()


if __name__ == "__main__":
    main()
