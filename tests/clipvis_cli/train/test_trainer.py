"""The optimisation step's pieces as the official trainer has them: gradient clipping, mixed precision."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from clipvis.cli.train.config import ConfigError, load_train_config

from ..commands.test_train import final_weights, train
from .conftest import write_coco


def test_a_clip_value_of_zero_or_less_trains_without_clipping_as_the_official_code(tmp_path, tiny_train_config):
    """Official build_optimizer clips the full model only when CLIP_VALUE > 0: 0 froze the head, -1 made it climb."""
    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=2)
    runs = {}
    for name, override in (("off", "SOLVER.CLIP_GRADIENTS.ENABLED=false"),
                           ("zero", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE=0"),
                           ("negative", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE=-1")):
        train(config, tmp_path / name, data, override)
        runs[name] = final_weights(tmp_path / name)
    for name in ("zero", "negative"):
        assert all(torch.equal(runs[name][k], runs["off"][k]) for k in runs["off"]), name


def test_value_and_norm_clipping_need_a_positive_clip_value():
    """CLIP_TYPE value / norm clip whenever enabled (detectron2): a CLIP_VALUE of 0 or less is refused."""
    for override in ("SOLVER.CLIP_GRADIENTS.CLIP_TYPE=value", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE=norm"):
        with pytest.raises(ConfigError, match="CLIP_VALUE must be positive with CLIP_TYPE"):
            load_train_config("lvis_r50.yaml", [override, "SOLVER.CLIP_GRADIENTS.CLIP_VALUE=0"])
        load_train_config("lvis_r50.yaml", [override])


@pytest.mark.parametrize(("device", "asked", "expected"), [
    ("cuda", "auto", torch.float16), ("cpu", "auto", None), ("cuda", "bf16", torch.bfloat16),
    ("cpu", "fp16", torch.float16),
])
def test_automatic_mixed_precision_is_the_official_fp16_with_a_grad_scaler_on_gpus(tmp_path, monkeypatch, device,
                                                                                  asked, expected):
    """detectron2's AMPTrainer (the released models): fp16 autocast + GradScaler, also where bf16 is supported."""
    from clipvis.cli.train.trainer import Trainer, TrainerSettings

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    settings = TrainerSettings(output_dir=tmp_path, max_iter=1, base_lr=1e-4, steps=(), amp_dtype=asked)
    assert Trainer._amp_dtype(SimpleNamespace(settings=settings, device=torch.device(device))) == expected
    settings.amp = False
    assert Trainer._amp_dtype(SimpleNamespace(settings=settings, device=torch.device(device))) is None


@pytest.mark.parametrize(("asked", "state", "bf16_supported", "expected"), [
    ("auto", {"scaler": {}}, True, torch.bfloat16),  # started before auto became fp16: bf16, no scaler
    ("auto", {"scaler": {}}, False, torch.float16),
    ("auto", {"scaler": {"scale": 1024.0}}, True, torch.float16),
    ("auto", {"scaler": {}, "amp_dtype": "bf16"}, False, torch.bfloat16),  # recorded: kept
    ("auto", {"scaler": {"scale": 1024.0}, "amp_dtype": "fp16"}, True, torch.float16),
    ("auto", {"scaler": {}, "amp_dtype": "fp32"}, True, torch.float16),  # trained in fp32 (CPU): auto of today
    ("fp16", {"scaler": {}, "amp_dtype": "bf16"}, True, torch.float16),  # set explicitly: honoured
    ("bf16", {"scaler": {"scale": 1024.0}}, True, torch.bfloat16),
])
def test_a_resumed_run_keeps_the_mixed_precision_auto_gave_it(tmp_path, monkeypatch, asked, state, bf16_supported,
                                                              expected):
    from clipvis.cli.train.trainer import Trainer, TrainerSettings, resumed_amp_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16_supported)
    settings = TrainerSettings(output_dir=tmp_path, max_iter=1, base_lr=1e-4, steps=(), amp_dtype=asked)
    device = torch.device("cuda")
    configured = Trainer._amp_dtype(SimpleNamespace(settings=settings, device=device))
    assert resumed_amp_dtype(settings, device, state, configured) == expected
    cpu = torch.device("cpu")  # a GPU run resumed on the CPU: auto trains there in fp32, whatever it recorded
    cpu_configured = Trainer._amp_dtype(SimpleNamespace(settings=settings, device=cpu))
    assert resumed_amp_dtype(settings, cpu, state, cpu_configured) == cpu_configured
    settings.amp = False
    assert resumed_amp_dtype(settings, device, state, None) is None


def test_resuming_a_bf16_run_in_fp16_or_an_fp16_run_in_bf16_starts_a_fresh_scaler_or_drops_it(tmp_path,
                                                                                                 tiny_train_config):
    """The reviewer's repro: a run trained without the GradScaler (bf16, what auto gave on such GPUs before it became
    fp16) resumed with it, and the other way round, continue from the checkpoint instead of a traceback."""
    import yaml
    from typer.testing import CliRunner

    from clipvis.cli.app import app

    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=3, CHECKPOINT_PERIOD=2)
    for before, after in (("bf16", "fp16"), ("fp16", "bf16")):
        run = tmp_path / before
        train(config, run, data, "SOLVER.AMP.ENABLED=True", f"CLIPVIS.AMP_DTYPE={before}")
        for name in ("model_0000002.safetensors", "model_0000002.state.pt"):
            (run / name).unlink()
        (run / "last_checkpoint").write_text("model_0000001.safetensors")
        result = CliRunner().invoke(app, ["train", "--output-dir", str(run), "--resume",
                                          f"CLIPVIS.AMP_DTYPE={after}"])
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert (run / "last_checkpoint").read_text().strip() == "model_0000002.safetensors"
        state = torch.load(run / "model_0000002.state.pt", weights_only=False)
        assert state["amp_dtype"] == after and bool(state["scaler"]) == (after == "fp16")
        assert yaml.safe_load((run / "config.yaml").read_text())["CLIPVIS"]["AMP_DTYPE"] == after


@pytest.mark.parametrize("pointer", [b"\xff\xfe", b"model_0000003.safetensors", b""])
def test_resume_takes_the_newest_checkpoint_with_its_state_past_a_damaged_or_dangling_last_checkpoint(tmp_path,
                                                                                                      pointer):
    """A `last_checkpoint` that is not UTF-8 text (two bytes of a damaged file) ended `clipvis train --resume` with a
    bare UnicodeDecodeError, where `--weights FOLDER` passed over it: it is no pointer, as one naming a file that is
    not there or nothing."""
    from clipvis.cli.train.trainer import resume_point

    for name in ("model_0000001.safetensors", "model_0000002.safetensors"):
        (tmp_path / name).write_bytes(b"x")
    torch.save({"iteration": 1}, tmp_path / "model_0000001.state.pt")
    (tmp_path / "last_checkpoint").write_bytes(pointer)
    assert resume_point(tmp_path) == tmp_path / "model_0000001.safetensors"


def test_a_training_state_that_cannot_be_read_counts_as_lost(tmp_path):
    """An empty or truncated .state.pt (a crash, a full disk) stopped --resume with 'Aborted.' or a 71-line traceback
    where README says a lost state falls back to the checkpoint before: one that cannot be read is lost."""
    from clipvis.cli.train.trainer import resume_point, state_damage

    for iteration in (1, 2, 3):
        (tmp_path / f"model_000000{iteration}.safetensors").write_bytes(b"x")
        state = {"iteration": iteration, "optimizer": list(range(1000))}
        torch.save(state, tmp_path / f"model_000000{iteration}.state.pt")
    (tmp_path / "last_checkpoint").write_text("model_0000003.safetensors")
    newest, middle = tmp_path / "model_0000003.safetensors", tmp_path / "model_0000002.safetensors"
    assert state_damage(newest) is None and resume_point(tmp_path) == newest
    (tmp_path / "model_0000003.state.pt").write_bytes(b"")
    state = tmp_path / "model_0000002.state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    assert (state_damage(newest), state_damage(middle)) == ("an empty file", "truncated or damaged")
    assert resume_point(tmp_path) == tmp_path / "model_0000001.safetensors"
    assert state_damage(tmp_path / "model_0000004.safetensors") is None  # none there: not damaged, missing


def test_lines_an_evaluation_prints_under_the_live_training_line_are_recorded_without_a_hang(monkeypatch) -> None:
    """Review 274: on a terminal, training hung at its first periodic evaluation, one thread spinning: the live
    line's console wrote to whatever sys.stderr was at each write, rich made sys.stderr a proxy writing through that
    console, and the evaluation's line recorder, wrapping the proxy, became sys.stderr: each write went round for
    ever. The console keeps the stderr it was made with; the lines recorded lose the terminal's control codes."""
    import io
    import sys
    import threading

    from clipvis.cli.standard_streams import stderr_lines_recorded
    from clipvis.cli.train.trainer import ProgressLine

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    line = ProgressLine(total=4, start=0, enabled=True)
    assert line.progress is not None  # the live line, as on a terminal
    recorded: list[str] = []

    def evaluation() -> None:
        with stderr_lines_recorded() as lines:
            print("\x1b[2K\x1b[1Aclipvis: error: v1: a frame is missing", file=sys.stderr)
        recorded.extend(lines)

    try:
        worker = threading.Thread(target=evaluation, daemon=True)
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive(), "writing under the live line went round for ever"
    finally:
        if not worker.is_alive():  # (stopping the line would go round too: the test fails, not hangs)
            line.close()
    assert recorded == ["clipvis: error: v1: a frame is missing"]
    # written as it was, not printed through the live line's console (review 279: an evaluation's own live display
    # came out as its escape codes, highlighted as text)
    assert "\x1b[2K\x1b[1Aclipvis: error: v1: a frame is missing\n" in terminal.getvalue()
