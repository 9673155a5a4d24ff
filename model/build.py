"""Assembling and loading CLIP-VIS models: the one place that turns configs and checkpoint files into a `ClipVis`.

* :func:`create_model` builds a model from a config (random head; CLIP random or open_clip's pretrained weights).
* :func:`load_model` builds the model a checkpoint file (or a released checkpoint's name) describes and loads it.
* :func:`check_checkpoint` verifies a file without loading it into a model (used before a download enters the cache).
* :func:`save_pretrained` / :func:`to_official_state_dict` write a model back out.

State-dict reading and writing itself is :mod:`clipvis.model.checkpoint` (pure I/O, no model).
"""

from __future__ import annotations

import os
import socket
import urllib.request
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch

from clipvis.model.call_checks import checked_flag, checked_path
from clipvis.model.checkpoint import (
    CheckpointContents,
    CheckpointError,
    has_clip_weights,
    infer_clip_model,
    infer_head_config,
    official_key,
    read_checkpoint,
    to_official_keys,
    write_state_dict,
)
from clipvis.model.clip_backbone import ClipBackbone, UnknownClipError, build_open_clip_model
from clipvis.model.clipvis import ClipVis
from clipvis.model.config import (
    ClipVisConfig,
    clip_name,
    load_clip_model_config,
    load_config_file,
    official_key_name,
)
from clipvis.model.devices import resolve_device
from clipvis.model.errors import Parameter
from clipvis.weights import (
    CACHE_ENV,
    OFFLINE_ENV,
    WeightsError,
    find_pretrained,
    known_clip_models,
    offline_mode,
    release_named,
    resolve_weights,
)
from clipvis.weights.download_report import active_reporter
from clipvis.weights.training_folder import not_weights_reason

# A model config: a ClipVisConfig (check_checkpoint's result), a mapping of its fields, or a config file
ConfigSource = ClipVisConfig | str | Path | Mapping[str, Any]
# An open_clip model config: a mapping or a JSON file
ClipConfigSource = str | Path | Mapping[str, Any]
# One problem in an error's list: text, or text and the parameters that would fix it
Problem = str | tuple[str | Parameter, ...]
# What load_model and the checks take as a checkpoint, as a TypeError words it
CHECKPOINT_PATH = "a released checkpoint's name or a checkpoint's path"


class UntrustedClipError(CheckpointError):
    """A config or checkpoint names a CLIP whose weights clipvis would download but does not trust by default.
    ``problem``: the message without its advice to pass ``allow_hub_clip`` (a front end that cannot allow such a
    CLIP gives its own)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"{problem}; pass ", Parameter("allow_hub_clip", "allow_hub_clip=True"),
                         " to let open_clip download it")


def check_pretrained_clip(config: ClipVisConfig | Mapping[str, Any] | None = None,
                          allow_hub_clip: bool = False) -> None:
    """Raise what ``create_model(config, pretrained_clip=True, allow_hub_clip=allow_hub_clip)`` raises before it
    fetches or builds anything: UnknownClipError (a name open_clip does not know), UntrustedClipError (not one of the
    released models' CLIPs), CheckpointError (a CLIP given by model config, which has no pretrained weights; or
    ``CLIPVIS_OFFLINE`` set and its weights not in the Hugging Face cache), ClipFetchError (not cached, and
    ``HF_HUB_OFFLINE`` set or the hub's name does not resolve: no network). Nothing is built and the network is asked
    no more than that name: a front end says so before the slow steps that come before its model (loading training
    data)."""
    allow_hub_clip = checked_flag(allow_hub_clip, "allow_hub_clip")
    config = _as_model_config(config)
    _refuse_clip_name(config, allow_hub_clip, for_checkpoint=False)
    _cached_pretrained_clip(config, for_checkpoint=False)


def _as_model_config(config: ClipVisConfig | Mapping[str, Any] | None) -> ClipVisConfig:
    """A ClipVisConfig from a mapping of its fields (the rest as the default) or None (the default)."""
    if config is None:
        return ClipVisConfig()
    if isinstance(config, ClipVisConfig):
        return config
    return ClipVisConfig.from_dict({**ClipVisConfig().to_dict(), **config})


def _clip_use(for_checkpoint: bool) -> str:
    """Why the CLIP's pretrained weights are wanted, as the errors about them begin."""
    return ("the checkpoint has no CLIP weights" if for_checkpoint
            else "create_model(pretrained_clip=True) takes the CLIP weights from open_clip")


def _refuse_clip_name(config: ClipVisConfig, allow_hub_clip: bool, for_checkpoint: bool,
                      checkpoint: Path | None = None) -> None:
    """The checks of :func:`_pretrained_clip` on the CLIP's name, before its checkpoint's head is checked: a CLIP
    given by model config (no pretrained weights), a name open_clip does not know, an untrusted hub CLIP."""
    import open_clip

    name, tag = config.clip_model_name, config.clip_pretrained
    why = _clip_use(for_checkpoint)
    if config.clip_model_config is not None:
        if for_checkpoint:
            where = f"{checkpoint}: " if checkpoint is not None else ""
            raise CheckpointError(f"{where}the checkpoint holds no CLIP weights (no backbone.clip_model.* keys), and a "
                                  "CLIP given by model config has no pretrained weights to download: give a "
                                  "checkpoint that holds its CLIP")
        raise CheckpointError(f"{why}, but a CLIP given by model config has no pretrained weights to download: build "
                              "with pretrained_clip=False and load a checkpoint's weights")
    if not name.startswith("hf-hub:") and open_clip.get_model_config(name) is None:  # (the hub's are looked up there)
        raise UnknownClipError(
            f"{why} and its config names CLIP {clip_name(name, tag)}, which open_clip does not know: no weights can "
            "be downloaded under that name"
        )
    if (name, tag) not in known_clip_models() and not allow_hub_clip:
        known = ", ".join(clip_name(n, t) for n, t in sorted(known_clip_models()))
        raise UntrustedClipError(
            f"{why} and its config names CLIP {clip_name(name, tag)}, which is not one of the released models' CLIPs "
            f"({known})"
        )


def _cached_pretrained_clip(config: ClipVisConfig, for_checkpoint: bool) -> tuple[dict[str, Any], Path | None]:
    """open_clip's pretrained config of the CLIP and the weights file to read from the Hugging Face cache (None:
    open_clip fetches them); CheckpointError where it is not cached and ``CLIPVIS_OFFLINE`` is set; ClipFetchError
    where it is not cached and ``HF_HUB_OFFLINE`` is set, or the hub cannot be reached (:func:`_unreachable_hub`).
    Asks the network no more than whether the hub's name resolves.

    An `hf-hub:` CLIP is read from the cache (the snapshot folder holding its open_clip_config.json and weights, see
    :func:`_cached_hub_clip`) only offline (``CLIPVIS_OFFLINE``, ``HF_HUB_OFFLINE``): online open_clip asks the hub
    for it, as a repository may have moved on since it was fetched, unless it cannot be reached."""
    import open_clip

    name, tag = config.clip_model_name, config.clip_pretrained
    pretrained_cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    hub_entry = _hub_entry(name, pretrained_cfg)
    # A CLIP already in the Hugging Face cache is read from there without asking the hub whether it changed (a
    # release's weights do not): no network at all, so offline (CLIPVIS_OFFLINE, or no connection, where
    # huggingface_hub's retries took ~20-50 s before it fell back on the cache) it loads at once.
    cached = _cached_hub_clip(hub_entry) if _is_hub_name(name) else _cached_clip_file(hub_entry)
    if cached is None and offline_mode():
        why = _clip_use(for_checkpoint)
        remedy = ("use a checkpoint that holds the CLIP (backbone.clip_model.* keys)" if for_checkpoint
                  else f"unset {OFFLINE_ENV}, or build with pretrained_clip=False and load a checkpoint's weights")
        old_open_clip = _hub_folder_reader_missing()
        if _is_hub_name(name) and old_open_clip is not None:  # it fetches the repository's config and weights
            # through huggingface_hub (open_clip/factory.py, create_model), whether the cache holds them or not
            hub_remedy = (remedy if for_checkpoint  # (unsetting it is the last remedy, said once, with its setting)
                          else "build with pretrained_clip=False and load a checkpoint's weights")
            raise CheckpointError(
                f"{why} and {OFFLINE_ENV} is set, so the {clip_name(name, tag)} CLIP cannot be loaded: {old_open_clip}"
                f", and takes an hf-hub: CLIP's config and weights through huggingface_hub, which may ask the hub, "
                f"cached ({_hugging_face_cache()}) or not; {hub_remedy}, or unset {OFFLINE_ENV} and set "
                "HF_HUB_OFFLINE=1 (huggingface_hub then reads it from its cache, never the network)"
            )
        if _is_hub_name(name):  # open_clip reads the repository's open_clip_config.json and weights
            raise CheckpointError(
                f"{why} and {OFFLINE_ENV} is set, so the {clip_name(name, tag)} CLIP, whose open_clip config and "
                f"weights are not in the Hugging Face cache ({_hugging_face_cache()}), cannot be downloaded; {remedy}"
            )
        raise CheckpointError(
            f"{why} and {OFFLINE_ENV} is set, so the {clip_name(name, tag)} CLIP weights, which are not in the "
            f"Hugging Face cache ({_hugging_face_cache()}), cannot be downloaded; {remedy}"
        )
    source = str(hub_entry or "").strip("/") or None  # (an hf-hub: name's repository, or the tag's hf_hub entry)
    # HF_HUB_OFFLINE (clusters set it): huggingface_hub would refuse the fetch; said as its refusal is, before anything
    # slow (train's data). Not for an hf-hub: CLIP where the installed open_clip reads none from the cache's folder
    # (`_cached_hub_clip` cannot tell it is there): open_clip takes it through huggingface_hub, which reads its cache
    hub_through_huggingface = _is_hub_name(name) and _hub_folder_reader_missing() is not None
    if cached is None and source is not None and _hub_offline_variables() and not hub_through_huggingface:
        raise ClipFetchError(name, tag, source, LookupError("they are not in the Hugging Face cache"))
    if offline_mode() or _hub_offline_variables():
        return pretrained_cfg, cached
    # Online. A machine without a network (the hub's name does not resolve) is told at once: huggingface_hub retried
    # each file ~23 s (1+2+4+8+8 s) before it failed, ~55 s for a CLIP. An hf-hub: CLIP the cache holds is then read
    # from it, as offline; where the hub can be asked, open_clip asks it for such a CLIP (its repository may have
    # moved on).
    hub = str(hub_entry or "").strip("/") or None
    unreachable = _unreachable_hub() if hub is not None and (cached is None or _is_hub_name(name)) else None
    if unreachable is not None and cached is None:
        raise ClipFetchError(name, tag, hub, unreachable)
    if _is_hub_name(name) and unreachable is None:
        cached = None
    return pretrained_cfg, cached


def _pretrained_clip(config: ClipVisConfig, allow_hub_clip: bool, for_checkpoint: bool = False,
                     checkpoint: Path | None = None,
                     head: CheckpointContents | None = None) -> torch.nn.Module:
    """The CLIP with open_clip's pretrained weights (downloaded by open_clip on first use), after the safety checks:
    only the released checkpoints' (name, tag) pairs unless ``allow_hub_clip``, never with ``CLIPVIS_OFFLINE``.
    ``for_checkpoint``: for a checkpoint without CLIP weights (load_model), which the messages then name; otherwise
    for ``create_model(pretrained_clip=True)``. ``checkpoint``: that file, which messages name. ``head``: its
    weights, checked against the model ``config`` describes before anything is fetched (:func:`_check_head_fit`)."""
    import open_clip

    name, tag = config.clip_model_name, config.clip_pretrained
    _refuse_clip_name(config, allow_hub_clip, for_checkpoint, checkpoint)
    if head is not None and checkpoint is not None:  # a file that does not fit fails before a CLIP is fetched for it
        _check_head_fit(head, checkpoint, config)
    pretrained_cfg, cached = _cached_pretrained_clip(config, for_checkpoint)
    # open_clip >= 2.29 builds OpenAI CLIPs with GELU unless told otherwise; the OpenAI weights need QuickGELU
    # (docs/fidelity.md, "Network").
    quick_gelu = bool(pretrained_cfg.get("quick_gelu")) or tag == "openai"
    hub_entry = _hub_entry(name, pretrained_cfg)
    source = str(hub_entry or "").strip("/") or None
    try:
        if _is_hub_name(name) and cached is not None:  # the repository's snapshot folder, as open_clip reads a
            # local-dir: model (open_clip/factory.py, create_model): its open_clip_config.json and weights file
            return open_clip.create_model(f"{_LOCAL_DIR_PREFIX}{cached.parent}", force_quick_gelu=quick_gelu)
        return open_clip.create_model(name, pretrained=str(cached) if cached is not None else tag,
                                      force_quick_gelu=quick_gelu)
    except Exception as error:
        if isinstance(error, RuntimeError | OSError) and "Failed to download" in str(error):
            raise ClipFetchError(name, tag, source, error) from error
        damaged = _damaged_cached_clip(hub_entry)
        if damaged is None:
            raise  # building the CLIP failed, not fetching or reading its weights
        raise DamagedClipError(name, tag, *damaged) from error


#: open_clip's prefix of a CLIP it takes from the Hugging Face hub, and of one it reads from a folder that holds its
#: open_clip_config.json and weights as a hub repository does (open_clip/factory.py, parse_model_name)
_HUB_PREFIX = "hf-hub:"
_LOCAL_DIR_PREFIX = "local-dir:"
#: The config file open_clip reads an hf-hub: CLIP's model config from (open_clip/factory.py, _get_hf_config)
_HUB_CONFIG_FILE = "open_clip_config.json"


#: The schemes whose proxy huggingface_hub's requests go through (its HTTP client takes them from
#: urllib.request.getproxies(): the *_PROXY variables, upper or lower case, and on macOS/Windows the system's
#: settings): the proxy then resolves the hub's name, which this machine may not
_PROXY_SCHEMES = ("https", "http", "all")


class _HubNameUnresolved(OSError):
    """The hub's host name does not resolve here (:func:`_unreachable_hub`): nothing was tried, nor retried."""


def _unreachable_hub() -> OSError | None:
    """Why the Hugging Face hub (huggingface_hub's endpoint, ``HF_ENDPOINT``) cannot be reached from here, told at
    once: its host's name does not resolve (no network, no DNS), where huggingface_hub retried every request for ~23 s
    before it failed. None where it resolves, where a proxy is set (it resolves the name), and where this cannot be
    told (no huggingface_hub): huggingface_hub is then left to find out. Asks the network no more than that name."""
    if any(urllib.request.getproxies().get(scheme) for scheme in _PROXY_SCHEMES):
        return None
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    endpoint = urlsplit(str(constants.ENDPOINT))
    try:
        host, port = endpoint.hostname, endpoint.port
    except ValueError:  # a port that is no number: huggingface_hub says what is wrong with it
        return None
    if not host:
        return None
    try:
        socket.getaddrinfo(host, port or (443 if endpoint.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        return _HubNameUnresolved(f"the name {host} does not resolve ({error.strerror or error}): no network, or "
                                  "no DNS")
    except (OSError, UnicodeError):
        return None
    return None


def _is_hub_name(name: str) -> bool:
    """Whether open_clip takes the CLIP ``name`` from the Hugging Face hub by its repository (``hf-hub:org/repo``)."""
    return name.startswith(_HUB_PREFIX)


def _hub_entry(name: str, pretrained_cfg: Mapping[str, Any]) -> str | None:
    """Where on the Hugging Face hub open_clip takes a CLIP's weights from, as its ``hf_hub`` entries name it
    (``org/repo/`` or ``org/repo/file``): an `hf-hub:` name's repository, else the tag's entry (None: not the hub)."""
    if _is_hub_name(name):
        repository = name[len(_HUB_PREFIX):].strip("/")
        return f"{repository}/" if repository else None
    entry = pretrained_cfg.get("hf_hub")
    return entry if isinstance(entry, str) else None


def _hub_folder_reader_missing() -> str | None:
    """Why the installed open_clip cannot read an `hf-hub:` CLIP from the Hugging Face cache (it has no
    ``local-dir:`` models, which newer open_clip reads from a folder), or None where it can."""
    import open_clip

    if getattr(getattr(open_clip, "factory", None), "LOCAL_DIR_PREFIX", None) == _LOCAL_DIR_PREFIX:
        return None
    return (f"open_clip {getattr(open_clip, '__version__', '')} reads no CLIP from a folder (newer open_clip does: "
            f"{_LOCAL_DIR_PREFIX} models)")


def _cached_hub_clip(hub_entry: str | None) -> Path | None:
    """The weights file of an `hf-hub:` CLIP's repository (``hub_entry``: ``org/repo/``) in the Hugging Face cache,
    in the snapshot folder that holds its open_clip_config.json too (open_clip reads that folder as a ``local-dir:``
    model, which the installed open_clip must know), or None. Looked up in the cache alone."""
    if hub_entry is None or _hub_folder_reader_missing() is not None:
        return None
    weights = _cached_clip_file(hub_entry)
    model_config = _cached_hub_file(hub_entry.strip("/"), _HUB_CONFIG_FILE)
    if weights is None or model_config is None or weights.parent != model_config.parent:
        return None
    return weights


#: The file names open_clip fetches a CLIP's weights under from a Hugging Face repository named without one
#: (open_clip/pretrained.py, download_pretrained_from_hf: the .safetensors alternative first)
_HUB_WEIGHTS_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _cached_clip_file(hf_hub: object) -> Path | None:
    """The CLIP weights file the Hugging Face cache holds for open_clip's ``hf_hub`` entry (``org/repo/`` or
    ``org/repo/file``), as open_clip would take it (the .safetensors alternative first), or None when none is cached.
    The path is the snapshot's (its name says the format; the blob it links to has none). Looked up in the cache
    alone (huggingface_hub's ``try_to_load_from_cache``): nothing is asked of the network."""
    if not isinstance(hf_hub, str) or not hf_hub.strip("/"):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo, file_name = os.path.split(hf_hub.rstrip("/")) if not hf_hub.endswith("/") else (hf_hub.rstrip("/"), "")
    candidates = (file_name,) if file_name and file_name != _HUB_WEIGHTS_FILES[1] else _HUB_WEIGHTS_FILES
    if file_name.endswith((".bin", ".pth")) and file_name != _HUB_WEIGHTS_FILES[1]:
        candidates = (file_name[: -len(".bin")] + ".safetensors", file_name)
    for candidate in candidates:
        cached = _cached_hub_file(repo, candidate, try_to_load_from_cache)
        if cached is not None:
            return cached
    return None


def _cached_hub_file(repo: str, file_name: str, lookup: Any = None) -> Path | None:
    """The snapshot path of ``file_name`` of the Hugging Face repository ``repo`` (its ``main`` revision) in the
    Hugging Face cache, or None (not cached; no huggingface_hub). ``lookup``: huggingface_hub's
    ``try_to_load_from_cache``. Nothing is asked of the network."""
    if lookup is None:
        try:
            from huggingface_hub import try_to_load_from_cache as lookup
        except ImportError:
            return None
    try:
        cached = lookup(repo, file_name, cache_dir=_hugging_face_cache())
    except Exception:  # a repository name huggingface_hub refuses: nothing cached under it
        return None
    return Path(cached) if isinstance(cached, str) and os.path.isfile(cached) else None


def _damaged_cached_clip(hf_hub: object) -> tuple[Path, str] | None:
    """The CLIP weights file in the Hugging Face cache for open_clip's ``hf_hub`` entry (``org/repo/`` or
    ``org/repo/file``) and why it cannot be read (cut short by an interrupted fetch or copy), or None when no such
    file is cached or it reads."""
    cached = _cached_clip_file(hf_hub)
    if cached is None:
        return None
    stored = cached.resolve()  # the blob the snapshot links to: deleting it has it fetched again
    unreadable = _unreadable_weights(stored, safetensors=cached.name.endswith(".safetensors"))
    return None if unreadable is None else (stored, *unreadable)


def _unreadable_weights(path: Path, safetensors: bool) -> tuple[str, bool] | None:
    """Why a cached CLIP weights file (``safetensors`` or torch's format; a blob's name says neither) cannot be read,
    and whether its contents are damaged (a .safetensors' header and tensors' extent, a .bin's archive: both fail on
    a file cut short) rather than closed to this user (a shared cache written by another: not to be deleted); None
    when it reads."""
    try:
        if safetensors:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as reader:
                list(reader.keys())
        else:
            torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:  # not opened (permission denied, an I/O error): the contents were not looked at
        return (error.strerror or str(error)), False
    except Exception as error:
        if "Weights only load failed" in str(error):  # a whole file of objects torch's safe loader refuses
            return None
        return (" ".join(str(error).split()).split(". ", 1)[0].rstrip(".") or type(error).__name__), True
    return None


class DamagedClipError(CheckpointError):
    """The CLIP weights file open_clip found in the Hugging Face cache cannot be read (cut short by an interrupted
    fetch or copy). The message names the CLIP and the file, and says to delete it so that it is fetched again."""

    def __init__(self, name: str, tag: str, path: Path, reason: str, damaged: bool = True) -> None:
        self.clip = clip_name(name, tag)
        self.path = path
        self._arguments = (name, tag, path, reason, damaged)
        unread = f"the {self.clip} CLIP weights in the Hugging Face cache cannot be read ({path}: {reason})"
        if not damaged:  # closed to this user (a shared cache written by another): the file may well be whole
            super().__init__(f"{unread}: give this user read access, or point HF_HOME at a cache of its own")
            return
        offline = _hub_offline_variables()
        fetch = (f"{_are_set(offline)} too: unset {'it' if len(offline) == 1 else 'them'} to fetch it again") \
            if offline else \
            "run again with internet access to fetch it again"
        super().__init__(f"{unread}; it was cut short (an interrupted download or copy): delete that file; {fetch}")

    def __reduce__(self) -> tuple:  # rebuilt from its arguments where it crosses processes (--num-gpus)
        return DamagedClipError, self._arguments


class ClipFetchError(CheckpointError):
    """open_clip could not fetch a CLIP's pretrained weights (from Hugging Face; no connection, and not in the
    Hugging Face cache). The message names the CLIP, where it is fetched from, the cause, and the ways round it:
    fetch it once online (it is then kept in the Hugging Face cache), copy that cache, or give a checkpoint that holds
    the CLIP. ``clip``: the CLIP's name as clipvis writes it (``RN50 (openai)``); ``source``: its Hugging Face
    repository (None where open_clip names none)."""

    def __init__(self, name: str, tag: str, source: str | None, cause: BaseException) -> None:
        self.clip = clip_name(name, tag)
        self.source = source
        where = f"from Hugging Face ({source})" if source else "by open_clip"
        offline = _hub_offline_variables()
        fetch = (f"{_are_set(offline)}, which keeps huggingface_hub from fetching: unset "
                 f"{'it' if len(offline) == 1 else 'them'} to fetch them" if offline
                 else "fetch them once with internet access")
        super().__init__(
            f"the {self.clip} CLIP weights could not be fetched {where}: {_fetch_cause(cause)}; {fetch} (they are "
            f"then kept in the Hugging Face cache, {_hugging_face_cache()}, which HF_HOME moves), copy that cache from "
            "a machine that has them, or give a checkpoint that holds the CLIP (backbone.clip_model.* keys) with ",
            Parameter("weights", "load_model(PATH)"),
            "" if offline or isinstance(cause, _HubNameUnresolved) else f"; {OFFLINE_ENV}=1 refuses at once instead "
            "of retrying"
        )

    def __reduce__(self) -> tuple:
        return _restored_fetch_error, (self.parts, self.clip, self.source)


def _restored_fetch_error(parts: tuple[str | Parameter, ...], clip: str, source: str | None) -> ClipFetchError:
    error = ClipFetchError.__new__(ClipFetchError)
    CheckpointError.__init__(error, *parts)
    error.clip, error.source = clip, source
    return error


def _fetch_cause(error: BaseException) -> str:
    """The reason of open_clip's download error, without its wrapping ("Failed to download weights for tag 'openai':
    Failed to download file (...) for .... Last error: <reason>"): its first sentence."""
    text = " ".join(str(error).split())
    for marker in ("Last error: ", "Failed to download weights for tag "):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
            if marker.endswith("tag "):
                text = text.split(": ", 1)[-1]
    first = text.split(". ", 1)[0].rstrip(".")
    return first or type(error).__name__


def _are_set(variables: list[str]) -> str:
    """``"HF_HUB_OFFLINE is set"``, ``"HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE are set"``."""
    return f"{' and '.join(variables)} {'is' if len(variables) == 1 else 'are'} set"


_HUB_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")  # either turns huggingface_hub offline


def _hub_offline_variables() -> list[str]:
    """The variables that have huggingface_hub run offline (taking files from its cache only; clusters set them for
    all jobs), by name: ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` or both, as set; [] when it runs online. Read
    from the environment where huggingface_hub says it is offline (it reads them when imported)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # open_clip without huggingface_hub
        return []
    if not constants.HF_HUB_OFFLINE:
        return []
    named = [name for name in _HUB_OFFLINE_VARIABLES
             if os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")]
    return named or ["HF_HUB_OFFLINE"]


def _hugging_face_cache() -> str:
    """Where huggingface_hub keeps what it fetched (``$HF_HOME/hub``, ``~/.cache/huggingface/hub`` by default)."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # open_clip without huggingface_hub
        return os.path.join(os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "hub")


def create_model(
    config: ClipVisConfig | Mapping[str, Any] | None = None,
    pretrained_clip: bool = False,
    allow_hub_clip: bool = False,
) -> ClipVis:
    """Build a CLIP-VIS model with random head weights.

    ``pretrained_clip=True`` loads the CLIP weights through open_clip (downloads them on first use; only the released
    models' CLIPs unless ``allow_hub_clip``); otherwise the CLIP is random too and its weights come from a checkpoint.
    ``config``: a `ClipVisConfig`, a mapping of its fields (the rest as the default), or None (the default).
    """
    if isinstance(config, str | os.PathLike):
        raise TypeError(
            f"create_model takes a ClipVisConfig, a mapping of its fields or None, not a name or path "
            f"({os.fspath(config)!r}): a released model or a checkpoint file is loaded with "
            "clipvis.load_model(name_or_path), which takes a config file as config="
        )
    if config is not None and not isinstance(config, ClipVisConfig | Mapping):
        raise TypeError(f"create_model takes a ClipVisConfig, a mapping of its fields or None, not "
                        f"{type(config).__name__}")
    return _create_model(config, checked_flag(pretrained_clip, "pretrained_clip"),
                         checked_flag(allow_hub_clip, "allow_hub_clip"))


def _create_model(
    config: ClipVisConfig | Mapping[str, Any] | None,
    pretrained_clip: bool,
    allow_hub_clip: bool,
    for_checkpoint: bool = False,
    checkpoint: Path | None = None,
    head: CheckpointContents | None = None,
) -> ClipVis:
    """:func:`create_model`; ``for_checkpoint``: the pretrained CLIP is for a checkpoint without one (the errors
    then say so); ``head``: the checkpoint's weights, checked before the CLIP is fetched."""
    config = _as_model_config(config)
    if pretrained_clip:
        clip_model = _pretrained_clip(config, allow_hub_clip, for_checkpoint, checkpoint, head)
    else:
        clip_model = build_open_clip_model(config.clip_model_name, config.clip_model_config, config.clip_pretrained)
    backbone = ClipBackbone(clip_model.float(), max_logit_scale=config.max_logit_scale)
    # float32 whatever torch's default dtype is (set_default_dtype(float64) gave a head the CLIP could not feed)
    return ClipVis(config, backbone).float().eval()


def resolve_config(
    state: Mapping[str, torch.Tensor],
    embedded: Mapping[str, Any] | None = None,
    config: ConfigSource | None = None,
    clip_config: ClipConfigSource | None = None,
    base: Mapping[str, Any] | None = None,
) -> ClipVisConfig:
    """The model config of a state dict: defaults < ``base`` (a registry entry's config) < the config embedded in a
    clipvis file < the user's ``config`` < what the keys tell (layers, heads, widths: a checkpoint cannot be run with
    another architecture). Disagreements with a user config are recorded in ``notes``."""
    values = ClipVisConfig().to_dict()
    values.update(base or {})
    values.update(embedded or {})
    user: dict[str, Any] = {}
    if config is not None:
        if isinstance(config, ClipVisConfig):
            user = {k: v for k, v in config.to_dict().items() if k != "notes"}  # its notes were said when it was made
        else:
            user = dict(config if isinstance(config, Mapping) else load_config_file(config))
        values.update(user)
    notes: list[str] = list(values.get("notes") or [])
    inferred = infer_head_config(state, encoder_points=int(values["encoder_points"]))
    for key, value in inferred.items():
        if values.get(key) == value:
            continue
        if key in user:  # what the user's config says of the architecture, and the checkpoint contradicts
            notes.append(_contradiction(key, user[key], value))
        values[key] = value
    if clip_config is not None:
        values["clip_model_config"] = load_clip_model_config(
            dict(clip_config) if isinstance(clip_config, Mapping) else clip_config
        )
    elif values.get("clip_model_config") is None:
        known = infer_clip_model(state)
        if known is not None:
            values["clip_model_name"], values["clip_pretrained"] = known
    values["notes"] = notes
    return ClipVisConfig.from_dict(values)


def _contradiction(field: str, configured: Any, found: int) -> str:
    """The warning for a config value that the checkpoint's keys contradict, in the official key's terms."""
    if field == "decoder_layers":  # DEC_LAYERS counts the query initialisation as a layer
        return (f"config says DEC_LAYERS {int(configured) + 1} ({int(configured)} decoder layers, DEC_LAYERS counting "
                f"the query initialisation) but the checkpoint has {found} decoder layers; using the checkpoint's "
                f"(DEC_LAYERS {found + 1})")
    name = official_key_name(field) or field
    return f"config says {name} {configured} but the checkpoint has {found}; using the checkpoint's"


def _describe(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


#: The key ending of BatchNorm's count of training batches: a buffer the layer reads only when it trains with
#: ``momentum=None``, never in evaluation. Converted or filtered checkpoints often leave it out; the official loader
#: (detectron2's checkpointer) only warns of it, and PyTorch's BatchNorm fills it (``_load_from_state_dict``).
BATCH_COUNTER_SUFFIX = ".num_batches_tracked"


def _with_batch_counters(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
                         ) -> Mapping[str, torch.Tensor]:
    """``state`` with the BatchNorm batch counters it lacks (``BATCH_COUNTER_SUFFIX``) as a new layer has them (0):
    a file without them loads, as it does in the official code."""
    missing = [key for key in expected if key.endswith(BATCH_COUNTER_SUFFIX) and key not in state]
    if not missing:
        return state
    return {**state, **{key: torch.zeros(expected[key].shape, dtype=expected[key].dtype) for key in missing}}


def _fit_problems(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                  official_names: bool = False) -> list[Problem]:
    """What keeps ``state`` from loading strictly into a model whose state dict is ``expected``; keys named as the
    file names them (``official_names``: the official ``sem_seg_head.*`` names, :func:`official_key`). A BatchNorm
    batch counter the file lacks is no problem (`_with_batch_counters` fills it)."""
    missing = sorted(set(expected) - set(state) - {key for key in expected if key.endswith(BATCH_COUNTER_SUFFIX)})
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    name = official_key if official_names else str
    parts: list[Problem] = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_describe([name(k) for k in missing])}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_describe([name(k) for k in unexpected])}")
    if mismatched:
        shown = [f"{name(k)} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in mismatched]
        parts.append(f"shape mismatches ({len(mismatched)}): {_describe(shown)}")
    if any(key.startswith("backbone.clip_model.") for key in (*missing, *unexpected, *mismatched)):
        parts.append(("the CLIP is not the one the file holds: give the checkpoint's model settings, its config (",
                      Parameter("config", "config="), ") and, for a CLIP open_clip does not know by name, its "
                      "open_clip model config (", Parameter("clip_config", "clip_config="), ")"))
    return parts


def _does_not_fit(path: Path, problems: list[Problem]) -> CheckpointError:
    """``<path>: checkpoint does not fit the model: <problem>; <problem>...`` (the parameters they name kept as such:
    ``ParameterHint``)."""
    parts: list[str | Parameter] = [f"{path}: checkpoint does not fit the model: "]
    for i, problem in enumerate(problems):
        if i:
            parts.append("; ")
        parts.extend((problem,) if isinstance(problem, str) else problem)
    return CheckpointError(*parts)


def _check_expected(state: Mapping[str, torch.Tensor], expected: Mapping[str, Any]) -> list[str]:
    """Differences between what a file holds and what a registry entry says it holds."""
    problems = []
    layers = infer_head_config(state).get("decoder_layers")
    if "decoder_layers" in expected and layers != expected["decoder_layers"]:
        problems.append(f"{layers} decoder layers where {expected['decoder_layers']} were expected")
    clip = infer_clip_model(state) if has_clip_weights(state) else None
    wanted = (expected.get("clip_model_name"), expected.get("clip_pretrained"))
    if has_clip_weights(state) and None not in wanted and clip != wanted:
        found = clip_name(*clip) if clip else "an unrecognised CLIP"
        problems.append(f"CLIP {found} where {clip_name(*wanted)} was expected")
    return problems


def _read_weights(path: Path) -> CheckpointContents:
    """``read_checkpoint(path)``; a training folder's other file given for its weights (a ``.state.pt``) says which
    file to give instead."""
    try:
        return read_checkpoint(path)
    except CheckpointError as error:
        reason = not_weights_reason(path)
        if reason is None:
            raise
        raise CheckpointError(f"{path}: {reason}") from error


def check_checkpoint(
    path: str | Path,
    expected: Mapping[str, Any] | None = None,
    config: ConfigSource | None = None,
    clip_config: ClipConfigSource | None = None,
) -> ClipVisConfig:
    """Verify a checkpoint file without loading it into a model: it reads, and its keys and shapes are exactly those of
    the model its config describes (and, with ``expected`` = a registry entry's config, that model). Returns the
    resolved config; raises :class:`CheckpointError` naming the file and the problem.

    ``path`` is what :func:`load_model` takes: a checkpoint file, a detectron2 or clipvis training folder (its
    checkpoint, as load_model picks it), or a released checkpoint's name (its cached copy, checked against that
    release's config; never downloaded here)."""
    text = os.fspath(checked_path(path, "path", CHECKPOINT_PATH))
    path = Path(text).expanduser()
    entry = release_named(text)
    if entry is not None:
        expected = expected if expected is not None else entry.model_config()
    if path.is_dir() or entry is not None:
        try:
            path = resolve_weights(text, download=False)
        except WeightsError as error:  # a folder without a checkpoint, a release not downloaded yet
            raise CheckpointError(str(error)) from error
    contents = _read_weights(path)
    state = contents.tensors
    cfg = resolve_config(state, contents.config, config, clip_config, base=expected)
    problems = _check_expected(state, expected or {})
    with torch.device("meta"):  # the model's key names and shapes, without allocating or initialising weights
        skeleton = create_model(cfg).state_dict()
    if not has_clip_weights(state):
        skeleton = {k: v for k, v in skeleton.items() if not k.startswith("backbone.")}
    problems += _fit_problems(state, skeleton, contents.official_names)
    if problems:
        raise _does_not_fit(path, problems)
    return cfg


def check_checkpoint_clip(
    name_or_path: str | os.PathLike[str],
    config: ConfigSource | None = None,
    clip_config: ClipConfigSource | None = None,
    *,
    allow_hub_clip: bool = False,
) -> None:
    """Raise what ``load_model(name_or_path, config, clip_config, allow_hub_clip=allow_hub_clip)`` raises about the
    CLIP of a checkpoint that holds none (it takes it from open_clip), before it fetches or builds anything:
    UnknownClipError (a name open_clip does not know), UntrustedClipError (not one of the released models' CLIPs),
    CheckpointError (a CLIP given by model config; a file that is no CLIP-VIS head, or not that CLIP's; or
    ``CLIPVIS_OFFLINE`` set and the CLIP not in the Hugging Face cache), ClipFetchError (not cached, and
    ``HF_HUB_OFFLINE`` set or the hub's name does not resolve: no network). A front end says so before the slow
    steps that come before its model (loading training data), as :func:`check_pretrained_clip` lets it for a model
    without a checkpoint.

    Nothing is raised for a checkpoint that holds its CLIP, nor for one this cannot find (a released checkpoint not
    downloaded yet, a missing path: load_model says what it says about those). The file is read; of the network, no
    more than whether the hub's name resolves."""
    text = os.fspath(checked_path(name_or_path, "name_or_path", CHECKPOINT_PATH))
    allow_hub_clip = checked_flag(allow_hub_clip, "allow_hub_clip")
    local = Path(text).expanduser()
    base: dict[str, Any] | None = None
    entry = release_named(text)
    try:
        if entry is not None:
            path, base = resolve_weights(text, download=False), entry.model_config()
        else:
            path = local if local.is_file() else resolve_weights(text, download=False)
    except WeightsError:
        return
    contents = _read_weights(path)
    if has_clip_weights(contents.tensors):
        return
    cfg = resolve_config(contents.tensors, contents.config, config, clip_config, base=base)
    _check_head(contents.tensors, path, contents.official_names)  # in load_model's order: see _pretrained_clip
    _refuse_clip_name(cfg, allow_hub_clip, for_checkpoint=True, checkpoint=path)
    _check_head_fit(contents, path, cfg)
    _cached_pretrained_clip(cfg, for_checkpoint=True)


def _released_file(
    name: str, download: bool, config: ConfigSource | None, clip_config: ClipConfigSource | None
) -> tuple[Path, dict[str, Any]]:
    """The cached file of a released checkpoint (downloaded and verified first when missing) and its config."""
    entry = find_pretrained(name)
    assert entry is not None
    expected = entry.model_config()

    def verify(candidate: Path) -> None:
        try:
            check_checkpoint(candidate, expected=expected, config=config, clip_config=clip_config)
        except CheckpointError:
            if config is None and clip_config is None:
                raise
            # The release's own config: a file that is the release stays in the cache, and a --config/--clip-config
            # that does not fit it is said when the model is built from the cached file (it threw the download
            # away, blaming Google Drive, and downloaded it again on every run).
            check_checkpoint(candidate, expected=expected)

    return resolve_weights(name, download=download, verify=verify), expected


def load_model(
    name_or_path: str | os.PathLike[str],
    config: ConfigSource | None = None,
    clip_config: ClipConfigSource | None = None,
    device: str | torch.device = "cpu",
    *,
    download: bool = True,
    allow_hub_clip: bool = False,
) -> ClipVis:
    """Build a :class:`ClipVis` for a checkpoint and load its weights (strict: no silent partial load).

    ``name_or_path``: a checkpoint file (official ``.pth`` or clipvis ``.safetensors``), a detectron2 output folder,
    or a released checkpoint's name (downloaded on first use, verified before it enters the cache; a cached copy that
    no longer loads is downloaded again once). ``config``: an official CLIP-VIS YAML, a clipvis JSON, a
    :class:`ClipVisConfig` (what :func:`check_checkpoint` returns) or a dict of its fields; ``clip_config``: an
    open_clip model config (file or dict) for a CLIP open_clip does not know by name. A checkpoint without CLIP
    weights takes them from open_clip: only for the released models' CLIPs unless ``allow_hub_clip``, and never with
    ``CLIPVIS_OFFLINE`` set. ``device``: as ``VideoPredictor``'s (``"auto"``: CUDA where there is a GPU); ValueError
    before the file is read for a device this machine does not have.
    """
    text = os.fspath(checked_path(name_or_path, "name_or_path", CHECKPOINT_PATH))
    download = checked_flag(download, "download")
    allow_hub_clip = checked_flag(allow_hub_clip, "allow_hub_clip")
    device = resolve_device(device)  # before the file is read: "auto", or a GPU this machine does not have
    base: dict[str, Any] | None = None
    local = Path(text).expanduser()
    if release_named(text) is not None:  # a name, not a file or training folder of that name
        path, base = _released_file(text, download, config, clip_config)
        try:
            contents = read_checkpoint(path)
        except CheckpointError as error:
            if offline_mode() or not download:
                raise CheckpointError(
                    f"{error}; the cached copy of {text} is damaged: delete {path} and run again without "
                    f"{OFFLINE_ENV} to download it afresh"
                ) from error
            reason = " ".join(str(error).split()).removeprefix(f"{path}: ")
            active_reporter().say(f"the cached copy of {text} ({path}) is damaged ({reason}); downloading it again")
            try:
                path.unlink(missing_ok=True)
            except OSError as unlink_error:  # a cache on read-only storage, another user's cache
                raise CheckpointError(
                    f"the cached copy of {text} is damaged ({' '.join(str(error).split())}) and cannot be deleted "
                    f"({unlink_error.strerror or unlink_error}): delete {path} where you can, or set {CACHE_ENV} to a "
                    "folder you can write to (it is downloaded there)"
                ) from error
            path, base = _released_file(text, download, config, clip_config)
            contents = read_checkpoint(path)
        # a file saved there by hand: another release, a model of one's own
        mismatch = _check_expected(contents.tensors, base)
        if mismatch:
            raise CheckpointError(
                f"{path}: the file cached for {text} is not that checkpoint ({'; '.join(mismatch)}): delete it to "
                "download the release again, or give this file by its path"
            )
    else:
        # A file is read as given; a folder (detectron2 output) or an unknown name goes through the resolver, which
        # picks the folder's checkpoint or lists the released names.
        path = local if local.is_file() else resolve_weights(text, download=False)
        contents = _read_weights(path)
    state = contents.tensors
    cfg = resolve_config(state, contents.config, config, clip_config, base=base)
    for note in cfg.notes:
        warnings.warn(note, stacklevel=2)
    has_clip = has_clip_weights(state)
    if not has_clip:  # the head is checked before a CLIP is fetched: a file of another model fails at once
        _check_head(state, path, contents.official_names)
    if has_clip:  # every weight comes from the file: nothing to initialise
        with torch.device("meta"):
            model = create_model(cfg)
    else:
        model = _create_model(cfg, pretrained_clip=True, allow_hub_clip=allow_hub_clip, for_checkpoint=True,
                              checkpoint=path, head=contents)
    expected = model.state_dict()
    if not has_clip:
        state = {**{k: v for k, v in expected.items() if k.startswith("backbone.")}, **state}
    state = _with_batch_counters(state, expected)
    problems = _fit_problems(state, expected, contents.official_names)
    if problems:
        raise _does_not_fit(path, problems)
    if not has_clip:
        model.load_state_dict(state, strict=True)
    elif not _assign_weights(model, state, expected):
        model = create_model(cfg)  # a buffer the file does not hold and _rebuild_buffers does not know: build it
        model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _check_head(state: Mapping[str, torch.Tensor], path: Path, official_names: bool) -> None:
    """Raise CheckpointError for a file without CLIP weights that holds no CLIP-VIS head either (another network's
    weights: a torchvision ResNet), before a CLIP is fetched for it. Whether the head fits is checked before the fetch
    too (:func:`_check_head_fit`), once the CLIP is known to be one that may be fetched."""
    if not any(key.startswith(HEAD_PREFIXES) for key in state):
        name = official_key if official_names else str
        shown = _describe(sorted(name(key) for key in state)) if state else "nothing"
        raise CheckpointError(f"{path}: not a CLIP-VIS checkpoint: none of its {len(state)} weights is a CLIP-VIS "
                              f"pixel or mask decoder weight (it holds {shown})")


def _check_head_fit(contents: CheckpointContents, path: Path, config: ClipVisConfig) -> None:
    """Raise CheckpointError when the weights of a file without CLIP weights are not the head of the model ``config``
    describes, before a CLIP is fetched for it (offline: ~75 s of retries, then an error about the CLIP, not the file;
    online: ~250 MB): another model's weights (a detectron2 Mask2Former: ``backbone.res2.*``), a head of another size.
    Keys and shapes are those of a skeleton on the meta device (no weights allocated), as :func:`check_checkpoint`
    takes them; a CLIP open_clip only knows from the Hugging Face hub (``hf-hub:``) is not built here (its config
    would be fetched): the fit is checked once it is."""
    import open_clip

    if config.clip_model_config is None and (config.clip_model_name.startswith("hf-hub:")  # (looked up there)
                                             or open_clip.get_model_config(config.clip_model_name) is None):
        return
    with torch.device("meta"):
        skeleton = create_model(config).state_dict()
    head = {k: v for k, v in skeleton.items() if not k.startswith("backbone.")}
    state = contents.tensors
    problems = _fit_problems(state, head, contents.official_names)
    if any(key.startswith(CLIP_FACING_PREFIXES) and key in head and state[key].shape != head[key].shape
           for key in state):
        default = ClipVisConfig()
        which = (" (the default config's)" if (config.clip_model_name, config.clip_pretrained)
                 == (default.clip_model_name, default.clip_pretrained) else "")
        problems.append((f"the layers that take the CLIP's features have other widths in the file: the model was "
                         f"built for CLIP {clip_name(config.clip_model_name, config.clip_pretrained)}{which}; give the "
                         "config the checkpoint was trained with (", Parameter("config", "config="), ")"))
    if problems:
        raise _does_not_fit(path, problems)


#: The head's layers that take the CLIP's feature maps (their input widths are the CLIP's: RN50's 256-2048 channels,
#: ConvNeXt-B's 128-1024; docs/architecture.md, pixel decoder)
CLIP_FACING_PREFIXES = ("pixel_decoder.input_proj.", "pixel_decoder.adapter_")


#: The state-dict prefixes of the CLIP-VIS head (ClipVis' modules besides the CLIP backbone).
HEAD_PREFIXES = ("pixel_decoder.", "mask_decoder.")


def _assign_weights(model: ClipVis, state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> bool:
    """Make ``state``'s tensors the weights of ``model`` (built on the meta device): what ``load_state_dict`` copies
    into an initialised model, without building and randomly initialising one first (~0.7 s of each R50 load on 2 CPU
    cores, ~1.2 s of ConvNeXt-B's; no random copy of the weights in memory beside the file's). Each tensor gets the
    dtype and memory layout the model gives it (the CLIP's convolutions are channels-last, ClipBackbone), and tensors
    that share memory in the file (saved from views of one buffer) get memory of their own. False, with the model left
    unusable, when the model holds a buffer outside the state dict that :func:`_rebuild_buffers` does not know."""
    holders = Counter(value.untyped_storage().data_ptr() for value in state.values())
    fitted = {}
    for key, value in state.items():
        want = expected[key]
        shared = holders[value.untyped_storage().data_ptr()] > 1  # two weights must not become one (torch.load)
        if shared or value.dtype != want.dtype or value.stride() != want.stride():
            value = torch.empty_strided(want.shape, want.stride(), dtype=want.dtype).copy_(value)
        fitted[key] = value
    model.load_state_dict(fitted, strict=True, assign=True)
    return _rebuild_buffers(model)


def _rebuild_buffers(model: torch.nn.Module) -> bool:
    """Compute the buffers that are not in the state dict (non-persistent) of a model built on the meta device; False
    if one is not known here. The only one in CLIP-VIS is open_clip's text attention mask: the causal mask, -inf above
    the diagonal and 0 elsewhere (open_clip's ``build_causal_mask``)."""
    for module in model.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if not buffer.is_meta:
                continue
            if name != "attn_mask" or buffer.dim() != 2 or buffer.shape[0] != buffer.shape[1]:
                return False
            causal = torch.full(tuple(buffer.shape), float("-inf"), dtype=buffer.dtype).triu_(1)
            module.register_buffer(name, causal, persistent=False)
    return True


def to_official_state_dict(model: ClipVis) -> dict[str, torch.Tensor]:
    """The model's weights under the official detectron2 key names, e.g. for the official code."""
    return to_official_keys(model.state_dict())


def save_pretrained(model: ClipVis, path: str | Path) -> Path:
    """Write weights + model config into one self-describing safetensors file (atomically)."""
    path = checked_path(path, "path", "a file's path")
    config = model.config.to_dict()
    config["notes"] = []
    return write_state_dict(model.state_dict(), config, path)


__all__ = [
    "CheckpointError",
    "ClipFetchError",
    "UntrustedClipError",
    "WeightsError",
    "check_checkpoint",
    "check_checkpoint_clip",
    "check_pretrained_clip",
    "create_model",
    "load_model",
    "resolve_config",
    "save_pretrained",
    "to_official_state_dict",
]
