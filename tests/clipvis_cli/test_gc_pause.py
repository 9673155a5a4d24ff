"""The garbage collector around start-up and exit (clipvis.cli.gc_pause): paused while the process imports and loads,
back on while videos are processed, and what it froze is what the process' owner chose to freeze."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest
import typer

from clipvis.cli.gc_pause import collector_paused
from clipvis.cli.predictor_loading import load_predictor
from clipvis.cli.segment import SegmentOptions


def run_python(script: str) -> str:
    """Run ``script`` in a fresh interpreter (freezing objects must not touch the test process); its stdout."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_collector_is_off_inside_the_block_and_on_again_after_it_even_after_an_error() -> None:
    assert gc.isenabled()
    collections: list[str] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        collections.append(phase)

    gc.callbacks.append(seen)
    try:
        with collector_paused():
            assert not gc.isenabled()
            made = [[] for _ in range(3 * gc.get_threshold()[0])]  # three generation-0 thresholds' worth
            assert collections == []  # no automatic collection ran (another thread's frees may lower get_count)
        assert gc.isenabled()
        assert len(made) == 3 * gc.get_threshold()[0]
    finally:
        gc.callbacks.remove(seen)
    with pytest.raises(KeyError), collector_paused():
        raise KeyError("boom")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_without_freeze_cycles_made_in_the_block_are_collected_afterwards() -> None:
    run_python(
        """
import gc, weakref
from clipvis.cli.gc_pause import collector_paused

class Node:
    pass

with collector_paused():
    node = Node()
    node.self = node
    alive = weakref.ref(node)
    del node
assert gc.get_freeze_count() == 0
gc.collect()
assert alive() is None, "a cycle made while paused was not freed once the collector was back"
"""
    )


def test_freeze_moves_every_object_alive_at_the_end_of_the_block_out_of_the_collections() -> None:
    printed = run_python(
        """
import gc
from clipvis.cli.gc_pause import collector_paused

before = gc.get_freeze_count()
with collector_paused(freeze=True):
    made = [[] for _ in range(5000)]
print(gc.get_freeze_count() - before >= 5000, gc.isenabled())
"""
    )
    assert printed.split() == ["True", "True"]


def test_the_clipvis_command_runs_its_command_with_the_collector_on_and_the_imports_frozen() -> None:
    # The application's main is replaced by a probe: the launcher imports the application and torch with the
    # collector paused (torch alone makes >100,000 objects, all frozen), runs the command with it on, and freezes
    # again at the end.
    printed = run_python(
        """
import gc, sys
import clipvis.cli.app
from clipvis.cli.launcher import main

seen = {}

def probe():
    seen["enabled"] = gc.isenabled()
    seen["frozen"] = gc.get_freeze_count()
    seen["made"] = [[] for _ in range(5000)]

clipvis.cli.app.main = probe
sys.argv = ["clipvis", "segment", "video.mp4", "--vocab", "cat"]
main()
print(seen["enabled"], seen["frozen"] > 100_000, gc.get_freeze_count() - seen["frozen"] >= 5000, gc.isenabled())
"""
    )
    assert printed.split() == ["True", "True", "True", "True"]


def test_help_and_version_answer_without_importing_torch() -> None:
    printed = run_python(
        """
import subprocess, sys
for arguments in (["--help"], ["segment", "--help"], ["--version"], []):
    code = "import sys; from clipvis.cli.launcher import main; sys.argv = ['clipvis', *sys.argv[1:]]\\n"
    code += "try:\\n    main()\\nexcept SystemExit:\\n    pass\\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True)
    print(result.stdout.split()[-1])
"""
    )
    assert printed.split() == ["False"] * 4


def test_a_command_line_runs_a_command_unless_it_asks_for_help_version_or_completions() -> None:
    from clipvis.cli.launcher import runs_a_command

    assert runs_a_command(["clipvis", "segment", "v.mp4", "--vocab", "cat"], {})
    assert runs_a_command(["clipvis", "export", "out/", "--format", "cvat"], {})
    assert not runs_a_command(["clipvis"], {})
    assert not runs_a_command(["clipvis", "segment", "--help"], {})
    assert not runs_a_command(["clipvis", "--version"], {})
    assert not runs_a_command(["clipvis", "segment"], {"_CLIPVIS_COMPLETE": "complete_bash"})


def test_models_load_with_the_collector_paused_and_it_is_back_on_whether_the_load_worked_or_not(
    tiny_weights, isolated_cache, monkeypatch
) -> None:
    import clipvis.model

    load_model = clipvis.model.load_model
    states = []

    def recording_load_model(*args, **kwargs):
        states.append(gc.isenabled())
        return load_model(*args, **kwargs)

    monkeypatch.setattr(clipvis.model, "load_model", recording_load_model)
    frozen = gc.get_freeze_count()
    load_predictor(SegmentOptions(vocabulary=["cat", "dog"], weights=str(tiny_weights)))
    assert states == [False] and gc.isenabled()
    assert gc.get_freeze_count() == frozen  # a library caller's objects are never frozen

    with pytest.raises(typer.Exit):
        load_predictor(SegmentOptions(vocabulary=["cat"], weights=str(tiny_weights.with_name("missing.safetensors"))))
    assert states == [False, False] and gc.isenabled()


def test_each_process_train_num_gpus_spawns_freezes_its_objects_as_it_ends_whatever_the_outcome() -> None:
    """`train --num-gpus N` runs its processes through PyTorch's spawn, not the launcher: their exit scanned every
    object of torch, open_clip and the model (seconds per process on a busy machine after a SIGTERM or a finished
    run). Each now freezes them as the launcher does, after a finished run, a stop and an error alike."""
    out = run_python(
        """
import gc, multiprocessing
import clipvis.cli.train.processes as processes

def finished(request, quiet):
    return None

def stopped(request, quiet):
    raise KeyboardInterrupt

def failed(request, quiet):
    raise ValueError("a process' error")

stop = multiprocessing.get_context("spawn").Value("i", 0)
for body in (finished, stopped, failed):
    processes.distributed_main = body
    try:
        processes._worker(0, None, 1, 29500, None, stop)
    except ValueError:
        pass
    print(body.__name__, gc.get_freeze_count() > 100_000)
    gc.unfreeze()
"""
    )
    assert out.split() == ["finished", "True", "stopped", "True", "failed", "True"], out
