"""Released CLIP-VIS checkpoints: the registry and a resolver from a name or path to a local file."""

from clipvis.weights.download_report import DownloadLines, DownloadReporter, download_reporter
from clipvis.weights.errors import (
    CacheLocationError,
    InvalidWeightsError,
    UnknownCheckpointError,
    WeightsError,
    WeightsNotAvailableError,
)
from clipvis.weights.registry import (
    DEFAULT_PRETRAINED,
    PUBLISHED_AP_DATASETS,
    PretrainedCheckpoint,
    find_pretrained,
    get_pretrained,
    known_clip_models,
    list_pretrained,
    pretrained_names,
    published_ap,
)
from clipvis.weights.resolve import (
    CACHE_ENV,
    OFFLINE_ENV,
    cache_dir,
    cache_path,
    offline_mode,
    release_named,
    released_name_of,
    resolve_weights,
    weights_cache_dir,
)

__all__ = [
    "CACHE_ENV",
    "CacheLocationError",
    "DEFAULT_PRETRAINED",
    "DownloadLines",
    "DownloadReporter",
    "OFFLINE_ENV",
    "PUBLISHED_AP_DATASETS",
    "InvalidWeightsError",
    "PretrainedCheckpoint",
    "UnknownCheckpointError",
    "WeightsError",
    "WeightsNotAvailableError",
    "cache_dir",
    "cache_path",
    "download_reporter",
    "find_pretrained",
    "get_pretrained",
    "known_clip_models",
    "list_pretrained",
    "offline_mode",
    "pretrained_names",
    "published_ap",
    "release_named",
    "released_name_of",
    "resolve_weights",
    "weights_cache_dir",
]
