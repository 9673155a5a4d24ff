"""Registry of the four released CLIP-VIS checkpoints.

Facts come from the official CLIP-VIS README (current table and Google Drive links, 2024-06-05 onward).
Published numbers are mask AP in percent, "evaluated with 4 NVIDIA 3090 GPUs"; no checksums or file
sizes were published.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from clipvis.weights.errors import UnknownCheckpointError

#: Dataset keys used by `PretrainedCheckpoint.published_ap`, in the order of the official table.
PUBLISHED_AP_DATASETS: tuple[str, ...] = (
    "lvvis_val",
    "lvvis_test",
    "ovis_val",
    "ytvis_2019_val",
    "ytvis_2021_val",
    "burst_val",
)

DEFAULT_PRETRAINED = "clipvis-lvis-r50"


@dataclass(frozen=True)
class PretrainedCheckpoint:
    """One released CLIP-VIS checkpoint (a detectron2 `.pth` file holding `{"model": state_dict}`)."""

    name: str
    """Short name used on the command line, e.g. ``clipvis-lvis-r50``."""
    url: str
    """Google Drive page to download the file by hand."""
    gdrive_id: str
    """Google Drive file id (what `gdown` needs)."""
    backbone: str
    """Human-readable backbone label, e.g. ``ResNet-50``."""
    clip_model: str
    """open_clip model name, e.g. ``RN50``."""
    clip_pretrained: str
    """open_clip pretrained tag, e.g. ``openai``."""
    dec_layers: int
    """The config value ``MODEL.MASK_FORMER.DEC_LAYERS`` the checkpoint was trained with."""
    training_data: str
    """Training data as named in the official table, e.g. ``LVIS`` or ``COCO, YTVIS19``."""
    file_name: str
    """File name in the local cache (the official README's name for the first checkpoint)."""
    published_ap: Mapping[str, float] = field(default_factory=dict, hash=False)
    """Published mask AP (%) keyed by dataset (see `PUBLISHED_AP_DATASETS`)."""
    notes: str = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.published_ap) - set(PUBLISHED_AP_DATASETS))
        if unknown:
            raise ValueError(f"checkpoint {self.name!r}: unknown dataset keys in published_ap: {unknown}")
        if self.dec_layers < 2:
            raise ValueError(f"checkpoint {self.name!r}: dec_layers must be >= 2, got {self.dec_layers}")
        # Read-only view so a shared registry entry cannot be altered by a caller.
        object.__setattr__(self, "published_ap", MappingProxyType(dict(self.published_ap)))

    @property
    def num_decoder_layers(self) -> int:
        """Transformer decoder layers actually in the state dict: ``DEC_LAYERS - 1``."""
        return self.dec_layers - 1

    def model_config(self) -> dict[str, object]:
        """The model settings this checkpoint needs, as ClipVisConfig fields (`clipvis.model.ClipVisConfig`).

        The head sizes not listed are the official defaults (256 wide, 100 queries, 8 heads) for all four files.
        """
        return {
            "clip_model_name": self.clip_model,
            "clip_pretrained": self.clip_pretrained,
            "decoder_layers": self.num_decoder_layers,
        }


_LVIS_NOTES = (
    "Image-only training on LVIS v1 train without rare-category annotations (lvis_v1_train_norare), "
    "class-agnostic; evaluate with DEC_LAYERS {dec} (issue #3: the video config's default 10 gives AP~0). "
    "Current (2024-06-05) checkpoint: IoU head with sigmoid."
)
_COCO_YTVIS_NOTES = (
    "Stage 1 on COCO 2017 train, stage 2 fine-tuned on single frames of YouTube-VIS 2019 train; "
    "DEC_LAYERS {dec}. YTVIS19 categories are seen in training, so its AP is not open-vocabulary. "
    "Current (2024-06-05) checkpoint: IoU head with sigmoid."
)


def _ap(
    lvvis_val: float, lvvis_test: float, ovis: float, ytvis19: float, ytvis21: float, burst: float
) -> dict[str, float]:
    values = (lvvis_val, lvvis_test, ovis, ytvis19, ytvis21, burst)
    return dict(zip(PUBLISHED_AP_DATASETS, values, strict=True))


_REGISTRY: tuple[PretrainedCheckpoint, ...] = (
    PretrainedCheckpoint(
        name="clipvis-lvis-r50",
        url="https://drive.google.com/file/d/1taVBPVTX-MVQkp5nc0QgreiaJqFhYgtJ/view?usp=drive_link",
        gdrive_id="1taVBPVTX-MVQkp5nc0QgreiaJqFhYgtJ",
        backbone="ResNet-50",
        clip_model="RN50",
        clip_pretrained="openai",
        dec_layers=7,
        training_data="LVIS",
        file_name="clipvis_lvis_r50_7.pth",
        published_ap=_ap(19.5, 14.6, 14.1, 32.2, 30.1, 5.2),
        notes=_LVIS_NOTES.format(dec=7)
        + " The official README's commands name this file clipvis_lvis_r50_7.pth.",
    ),
    PretrainedCheckpoint(
        name="clipvis-lvis-convnext-b",
        url="https://drive.google.com/file/d/1R7qGowGbY9Al7ygU2fZ-Y5uG5xfgmDyT/view?usp=drive_link",
        gdrive_id="1R7qGowGbY9Al7ygU2fZ-Y5uG5xfgmDyT",
        backbone="ConvNeXt-B",
        clip_model="convnext_base_w_320",
        clip_pretrained="laion_aesthetic_s13b_b82k",
        dec_layers=7,
        training_data="LVIS",
        file_name="clipvis_lvis_convnext_b_7.pth",
        published_ap=_ap(32.2, 25.3, 18.5, 42.1, 37.9, 8.3),
        notes=_LVIS_NOTES.format(dec=7)
        + " Paper (v3): LV-VIS val novel-category AP (APn) 40.2."
        + " open_clip tag laion_aesthetic_s13b_b82k"
        + " (the official config's laion2b_s29b_b131k_ft_soup does not exist, issue #2).",
    ),
    PretrainedCheckpoint(
        name="clipvis-coco-ytvis19-r50",
        url="https://drive.google.com/file/d/14Oed2SbCVZcAtV1yaZIzuc7adGXuHiyZ/view?usp=drive_link",
        gdrive_id="14Oed2SbCVZcAtV1yaZIzuc7adGXuHiyZ",
        backbone="ResNet-50",
        clip_model="RN50",
        clip_pretrained="openai",
        dec_layers=10,
        training_data="COCO, YTVIS19",
        file_name="clipvis_coco_ytvis19_r50_10.pth",
        published_ap=_ap(9.4, 6.7, 15.8, 39.7, 35.7, 4.2),
        notes=_COCO_YTVIS_NOTES.format(dec=10),
    ),
    PretrainedCheckpoint(
        name="clipvis-coco-ytvis19-convnext-b",
        url="https://drive.google.com/file/d/1fxujJmjMLAkXubzYSqiv2cVgDYIIp64f/view?usp=drive_link",
        gdrive_id="1fxujJmjMLAkXubzYSqiv2cVgDYIIp64f",
        backbone="ConvNeXt-B",
        clip_model="convnext_base_w_320",
        clip_pretrained="laion_aesthetic_s13b_b82k",
        dec_layers=10,
        training_data="COCO, YTVIS19",
        file_name="clipvis_coco_ytvis19_convnext_b_10.pth",
        published_ap=_ap(15.9, 12.0, 18.6, 50.0, 44.2, 5.0),
        notes=_COCO_YTVIS_NOTES.format(dec=10),
    ),
)


def _normalise_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def list_pretrained() -> list[PretrainedCheckpoint]:
    """All released checkpoints, the default (`DEFAULT_PRETRAINED`) first."""
    return list(_REGISTRY)


def pretrained_names() -> list[str]:
    """Short names of all released checkpoints, the default first."""
    return [c.name for c in _REGISTRY]


def known_clip_models() -> frozenset[tuple[str, str]]:
    """The (open_clip name, pretrained tag) pairs of the released checkpoints' CLIPs: the only CLIP weights clipvis
    downloads without being told to (a config or checkpoint naming another CLIP needs an explicit opt-in)."""
    return frozenset((c.clip_model, c.clip_pretrained) for c in _REGISTRY)


def find_pretrained(name: str) -> PretrainedCheckpoint | None:
    """The checkpoint called `name` (case-insensitive, ``_`` and ``-`` alike, or its file name), else None."""
    wanted = _normalise_name(name)
    for checkpoint in _REGISTRY:
        aliases = {checkpoint.name, _normalise_name(checkpoint.file_name)}
        aliases.add(_normalise_name(checkpoint.file_name.removesuffix(".pth")))
        if wanted in aliases:
            return checkpoint
    return None


def get_pretrained(name: str = DEFAULT_PRETRAINED) -> PretrainedCheckpoint:
    """The checkpoint called `name`; raises `UnknownCheckpointError` listing the valid names."""
    checkpoint = find_pretrained(name)
    if checkpoint is None:
        raise UnknownCheckpointError(
            f"unknown checkpoint {name!r}; released checkpoints: {', '.join(pretrained_names())}"
        )
    return checkpoint


def published_ap(name: str, dataset: str) -> float | None:
    """Published mask AP (%) of checkpoint `name` on `dataset` (e.g. ``lvvis_val``), None if not published.

    Raises `UnknownCheckpointError` for an unknown checkpoint name and ValueError, listing `PUBLISHED_AP_DATASETS`,
    for a dataset key that is not one of them (``"ovis"`` for ``"ovis_val"`` read as "not published").
    """
    key = dataset.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in PUBLISHED_AP_DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: published APs are keyed by {', '.join(PUBLISHED_AP_DATASETS)}")
    return get_pretrained(name).published_ap.get(key)
