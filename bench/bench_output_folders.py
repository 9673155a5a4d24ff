"""What choosing output folders costs over a large folder of inputs: no model, only `clipvis segment`'s bookkeeping.

    python bench/bench_output_folders.py                  # 5,000 inputs
    python bench/bench_output_folders.py --inputs 20000
    python bench/bench_output_folders.py --same-stem      # <id>/video.mp4: every input named alike

For N empty input files (a tenth of them sharing a stem with another, in a second folder; with --same-stem all
named video.mp4, each in a folder of its own) it times:
(1) `plan_folder_names` over the whole list (what every shard and torchrun rank does at start);
(2) claiming each input's folder in an empty output root, one after another, as a first run does;
(3) claiming them again once every folder exists, as a rerun with `--skip-existing` does before it skips.
Each claim takes the output root's lock, chooses the folder, writes its run.json when new and locks it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from clipvis.cli.inputs import VideoSource
from clipvis.cli.writers.layout import OutputRootListing, claim_output_folder, plan_folder_names
from clipvis.cli.writers.manifest import RunManifest


def make_inputs(root: Path, count: int, same_stem: bool = False) -> list[VideoSource]:
    """``count`` empty .mp4 files: most in ``root/a``, every tenth in ``root/b`` under a name also in ``a``; or
    (``same_stem``) ``root/<i>/video.mp4``."""
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    sources = []
    for i in range(count):
        if same_stem:
            path = root / f"{i:06d}" / "video.mp4"
            path.parent.mkdir()
        else:
            folder, number = ("b", i - 1) if i % 10 == 9 else ("a", i)
            path = root / folder / f"clip{number:06d}.mp4"
        path.touch()
        sources.append(VideoSource(path=path))
    return sources


def claim_all(output: Path, sources: list[VideoSource], planned: list[str]) -> float:
    """Seconds to claim (and release) every input's folder, as SegmentRunner does in one process."""
    taken: set[str] = set()
    reserved = frozenset(name.lower() for source, plan in zip(sources, planned, strict=True)
                         for name in (source.stem, plan))
    listing = OutputRootListing(output)
    start = time.perf_counter()
    for source, plan in zip(sources, planned, strict=True):
        manifest = RunManifest.start(source, source.stem, "w", ["a"], {})
        claim = claim_output_folder(output, manifest, source, taken, reserved, preferred=plan, listing=listing)
        claim.lock.release()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=5000)
    parser.add_argument("--same-stem", action="store_true", help="every input named video.mp4, in its own folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = make_inputs(root / "inputs", args.inputs, args.same_stem)
        start = time.perf_counter()
        planned = plan_folder_names([s.stem for s in sources])
        plan_s = time.perf_counter() - start
        first_s = claim_all(root / "out", sources, planned)
        again_s = claim_all(root / "out", sources, planned)
    n = args.inputs
    print(f"{n} inputs" + (", all named video.mp4" if args.same_stem else ""))
    print(f"  plan_folder_names           {plan_s:8.3f} s")
    print(f"  claim, empty output root    {first_s:8.3f} s  ({first_s / n * 1000:.2f} ms per input)")
    print(f"  claim, every folder there   {again_s:8.3f} s  ({again_s / n * 1000:.2f} ms per input)")


if __name__ == "__main__":
    main()
