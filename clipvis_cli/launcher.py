"""The `clipvis` command's entry point (also `python -m clipvis` and every `torchrun -m clipvis` rank).

Process-wide settings that must come before any other thread exists are made here, before the application (and
with it torch, numpy and PyAV) is imported: one glibc malloc arena for every thread (clipvis.cli.memory,
``share_one_malloc_arena``). Kept out of ``clipvis.cli.app`` so that importing the application as a library changes
nothing about the importing process.
"""

from __future__ import annotations

from clipvis.cli.memory import share_one_malloc_arena


def main() -> None:
    """Run the `clipvis` application with the process set up for it."""
    share_one_malloc_arena()
    from clipvis.cli.app import main as run_application

    run_application()


if __name__ == "__main__":
    main()
