"""The tiny random models every test builds on (one source for tests/model, tests/clipvis_cli and tests/weights).

Tests never download weights: the CLIPs here are open_clip models built from a model config with random weights.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from clipvis.model import ClipVis, ClipVisConfig, create_model, save_pretrained


def pytest_configure(config: pytest.Config) -> None:
    """The stop signals as a terminal gives them: clipvis keeps a signal its parent left ignored ignored (`nohup`
    ignores SIGHUP, a script's background job `cmd &` SIGINT), so a suite started that way tested that instead of
    clipvis' handling of Ctrl-C, SIGTERM and SIGHUP. Python's own Ctrl-C handler goes back in place, the others'
    default, in this process and so in the processes the tests start."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is signal.SIG_IGN:
            signal.signal(number, signal.default_int_handler if name == "SIGINT" else signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _stop_signals_restored() -> Iterator[None]:
    """A command stopped in this process (CliRunner) ignores further stop signals from its last line on, as the
    process it stands for does on its way out (clipvis.cli.distributed.ignore_stop_signals): the next test gets the
    handlers it had, and the processes it starts do not inherit an ignored Ctrl-C."""
    numbers = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]
    before = {number: signal.getsignal(number) for number in numbers}
    yield
    for number, handler in before.items():
        if signal.getsignal(number) is not handler and handler is not None:
            signal.signal(number, handler)

# A tiny open_clip ModifiedResNet CLIP (the shape of the golden cases' CLIP, smaller text tower): RN path.
TINY_RN_CLIP = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
# The layout of open_clip's convnext_base_w_320 config (timm trunk, no pooling, linear projection without bias) with
# timm's smallest ConvNeXt: ConvNeXt path.
TINY_CONVNEXT_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {
        "timm_model_name": "convnext_atto",
        "timm_model_pretrained": False,
        "timm_pool": "",
        "timm_proj": "linear",
        "timm_drop": 0.0,
        "timm_drop_path": 0.0,
        "image_size": 64,
    },
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_CLIPS = {"rn": TINY_RN_CLIP, "convnext": TINY_CONVNEXT_CLIP}
# A tiny head: 8 queries, 2 decoder layers, 4 heads, 64x64..128 input.
TINY_HEAD = dict(
    hidden_dim=32, num_queries=8, decoder_layers=2, num_heads=4, dim_feedforward=64, conv_dim=32, mask_dim=32,
    encoder_layers=1, encoder_dim_feedforward=64, min_size_test=64, max_size_test=128,
)


def make_tiny_config(backbone: str = "rn", **changes) -> ClipVisConfig:
    """A tiny ClipVisConfig for the ``"rn"`` or ``"convnext"`` CLIP, with field overrides."""
    return ClipVisConfig(clip_model_config=TINY_CLIPS[backbone], **{**TINY_HEAD, **changes})


def make_tiny_model(backbone: str = "rn", seed: int = 0, **changes) -> ClipVis:
    """A tiny random CLIP-VIS (deterministic for a seed)."""
    torch.manual_seed(seed)
    return create_model(make_tiny_config(backbone, **changes)).eval()


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., ClipVisConfig]:
    """Factory: ``tiny_config(backbone="rn", **field_overrides)`` -> a tiny ClipVisConfig."""
    return make_tiny_config


@pytest.fixture(scope="session")
def tiny_model_factory() -> Callable[..., ClipVis]:
    """Factory: ``tiny_model_factory(backbone="rn", seed=0, **field_overrides)`` -> a fresh tiny random model."""
    return make_tiny_model


@pytest.fixture(scope="session")
def tiny_model() -> ClipVis:
    """The tiny RN model (shared by the session: do not modify it; use ``tiny_model_factory`` for a private one)."""
    return make_tiny_model("rn")


@pytest.fixture(scope="session")
def tiny_convnext_model() -> ClipVis:
    """The tiny ConvNeXt model (shared by the session: do not modify it)."""
    pytest.importorskip("timm")
    return make_tiny_model("convnext")


@pytest.fixture(scope="session", autouse=True)
def one_thread_per_process() -> Iterator[None]:
    """One torch thread here, and OMP_NUM_THREADS=1 for the processes tests start (unless the environment sets it):
    the tiny models run several times faster on one thread than with intra-op threads on a busy 2-core machine, and
    in-process runs give the float results of the subprocesses. A test that needs other counts sets its own
    (``torch.set_num_threads``, ``monkeypatch.setenv``/``delenv``); ``one_torch_thread`` restores one after it."""
    threads = torch.get_num_threads()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def one_torch_thread(one_thread_per_process) -> Iterator[None]:
    """Each test ends with one torch thread again, whatever count it set."""
    yield
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def subprocess_temp_dir(tmp_path_factory) -> None:
    """The processes tests start keep their temporary files under pytest's own folder (cleaned with its runs):
    torchrun leaves a ``torchelastic_*`` log folder in TMPDIR for every job, about a hundred per test run."""
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("subprocess_tmp"))


@pytest.fixture(scope="session", autouse=True)
def empty_hugging_face_cache(tmp_path_factory) -> Iterator[None]:
    """An empty Hugging Face cache for the session, here and in the processes tests start: clipvis takes a CLIP that
    cache holds without downloading, so a CLIP the developer once fetched would load where a test expects its fetch
    (faked) or its refusal. A test that fills a cache points ``huggingface_hub.constants.HF_HUB_CACHE`` at its own."""
    try:
        from huggingface_hub import constants
    except ImportError:  # open_clip without huggingface_hub: no cache to look in
        yield
        return
    folder = str(tmp_path_factory.mktemp("hugging_face_hub"))
    before = constants.HF_HUB_CACHE, os.environ.get("HF_HUB_CACHE")
    constants.HF_HUB_CACHE = os.environ["HF_HUB_CACHE"] = folder
    yield
    constants.HF_HUB_CACHE = before[0]
    if before[1] is None:
        os.environ.pop("HF_HUB_CACHE", None)
    else:
        os.environ["HF_HUB_CACHE"] = before[1]


@pytest.fixture(autouse=True)
def hub_name_resolves(monkeypatch) -> None:
    """clipvis tells a machine without a network by the Hugging Face hub's name not resolving before open_clip's
    fetch (``clipvis.model.build._unreachable_hub``): here the name resolves, network or not, so that a test's faked
    fetch runs as it would online (nothing asks the hub). A test of that check puts the real one back."""
    from clipvis.model import build

    monkeypatch.setattr(build, "_unreachable_hub", lambda: None)


def _open_files_under(folder: Path) -> list[str]:
    """This process' open files under ``folder`` (an unlinked temporary file too: '<folder>/#123 (deleted)')."""
    targets = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:  # the listing's own descriptor, closed since
            continue
    return [target for target in targets if target.startswith(f"{folder}/")]


@pytest.fixture
def open_files_under() -> Callable[[Path], list[str]]:
    """``open_files_under(folder)``: the files this process holds open there (Linux: read from /proc)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("lists the process' open files from /proc (Linux)")
    return _open_files_under


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """The tiny RN model with 6 queries saved in clipvis' safetensors format (a checkpoint file for the CLI)."""
    model = make_tiny_model("rn", num_queries=6)
    return save_pretrained(model, tmp_path_factory.mktemp("weights") / "tiny.safetensors")


# --- golden cases (outputs of the official code, kept outside the repository) -------------------------------


def fidelity_root() -> Path:
    env = os.environ.get("CLIPVIS_FIDELITY_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "fidelity"


def golden_case_names() -> list[str]:
    """Every golden case present (a folder with a ``model.pth``), so a case added there, e.g. a ConvNeXt one, is
    checked by the same tests; case1 and case2 (both RN) when none is present (their tests then skip)."""
    root = fidelity_root()
    found = sorted(p.name for p in root.glob("*") if (p / "model.pth").is_file()) if root.is_dir() else []
    return found or ["case1", "case2"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test (or fixture) taking ``golden_case_name`` runs once per golden case present."""
    if "golden_case_name" in metafunc.fixturenames:
        metafunc.parametrize("golden_case_name", golden_case_names(), scope="module")


@pytest.fixture(scope="session")
def golden_case():
    """Factory: the folder of a golden case, or skip when the golden cases are absent
    (docs/fidelity.md; found through $CLIPVIS_FIDELITY_DIR, by default a folder CI keeps beside the checkout)."""

    def locate(name: str) -> Path:
        path = fidelity_root() / name
        if not (path / "model.pth").is_file():
            pytest.skip(f"golden case {name} not found at {path} (the golden cases of docs/fidelity.md: set "
                        "CLIPVIS_FIDELITY_DIR to their folder)")
        return path

    return locate
