"""Registry of the benchmark datasets CLIP-VIS is evaluated on, and where their files live on disk.

Layout under the data root (`--data-root` alone when given; else the first of `$CLIPVIS_DATASETS`,
`$DETECTRON2_DATASETS` as the official code uses, and `./datasets` that holds the dataset's files), following the
official `builtin.py`; the first path listed is the canonical one, the others are variants seen in the official
README / `tools/mAP.py` / the datasets' own downloads:

    lvvis/{train,val,test}/JPEGImages/<video>/<frame>.jpg
    lvvis/train/train_ytvis_style.json   (or train_instances_.json, train_instances.json)
    lvvis/val/val_instances_.json        (or val_instances.json)
    lvvis/test/test_instances.json       (or test_instances_.json)
    ytvis2019/{train,valid}/JPEGImages   ytvis2019/{train,valid}.json   (folder also ytvis19/, ytvis_2019/)
    ytvis2021/{train,valid}/JPEGImages   ytvis2021/{train,valid}.json   (or {train,valid}/instances.json; ytvis21/)
    ovis/valid                           ovis/annotations_valid.json    (or ovis/annotations/annotations_valid.json)
    burst/val                            burst/val/b2y_val.json         (or burst/b2y_val.json)

The vocabulary of a dataset is its GT category names in category-id order, verbatim (underscores kept), as the
official code feeds them to the text encoder.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from clipvis.cli.evaluation.errors import EvaluationInputError
from clipvis.cli.evaluation.files import read_json_file, write_zip_atomic
from clipvis.cli.evaluation.ground_truth import GtCategory, GtVideo, check_category_names, parse_ground_truth

DATA_ROOT_ENV = "CLIPVIS_DATASETS"
LEGACY_DATA_ROOT_ENV = "DETECTRON2_DATASETS"
DEFAULT_DATA_ROOT = Path("datasets")
SERVER_ZIP_MEMBER = "results.json"

FramePathRule = Literal["last_two_components", "join"]


class DatasetError(Exception):
    """A dataset name is unknown or its files are not where they should be (one-line message)."""


class UnknownDatasetError(DatasetError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    pass


class UnsafeFrameNameError(DatasetError, ValueError):
    """A GT frame name that is absolute or climbs out of the frames folder with `..`."""


@dataclass(frozen=True)
class EvaluationServer:
    """Where to upload results for a split whose GT is not public."""

    name: str
    url: str

    def instructions(self, zip_path: Path) -> str:
        return f"upload {zip_path} (a zip holding {SERVER_ZIP_MEMBER}) to the {self.name} server: {self.url}"


LVVIS_SERVER = EvaluationServer("LV-VIS Codabench", "https://www.codabench.org/competitions/1748/")
YTVIS_2019_SERVER = EvaluationServer("YouTube-VIS 2019 CodaLab", "https://codalab.lisn.upsaclay.fr/competitions/6064")
YTVIS_2021_SERVER = EvaluationServer("YouTube-VIS 2021 CodaLab", "https://codalab.lisn.upsaclay.fr/competitions/7680")
OVIS_SERVER = EvaluationServer("OVIS CodaLab", "https://codalab.lisn.upsaclay.fr/competitions/4763")


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset split. Paths are relative to the data root; the first candidate is canonical."""

    name: str
    title: str
    annotation_candidates: tuple[str, ...]
    frames_candidates: tuple[str, ...]
    num_classes: int
    protocol: str
    has_public_gt: bool
    download: str
    server: EvaluationServer | None = None
    frame_path_rule: FramePathRule = "join"

    def frame_path(self, frames_root: Path, file_name: str) -> Path:
        """Path of one frame listed in the GT `file_names` (LV-VIS: rebuilt from its last two components).

        Raises UnsafeFrameNameError for a name that would lead outside `frames_root` (absolute, `..`).
        """
        if self.frame_path_rule == "last_two_components":
            path = lvvis_frame_path(frames_root, file_name)
            relative = path.relative_to(frames_root)
        else:  # Windows separators (a GT written there) are folder separators here too, as for LV-VIS
            relative = Path(file_name.replace("\\", "/"))
            path = Path(frames_root) / relative
        parts = [part for part in re.split(r"[\\/]+", str(relative)) if part]
        if relative.is_absolute() or relative.drive or ".." in parts or not parts:
            raise UnsafeFrameNameError(f"frame name {file_name!r} leads outside the frames folder {frames_root}")
        return path

    def category_count_warning(self, annotation_file: Path, found: int) -> str | None:
        """The warning for an annotation file listing ``found`` categories where this dataset has `num_classes`
        (a filtered or re-converted file): it is scored with its own categories as the vocabulary, so its numbers
        are not the benchmark's. None when the counts agree."""
        if found == self.num_classes:
            return None
        if not self.has_public_gt:  # nothing is scored here: the server scores the zip against its own categories
            return (f"{annotation_file}: {found} categories, but {self.name} ({self.title}) has {self.num_classes}: "
                    f"the server zip's results use this file's {found} as the vocabulary, and its category ids; the "
                    "server scores them against its own")
        return (f"{annotation_file}: {found} categories, but {self.name} ({self.title}) has {self.num_classes}: "
                f"scored with this file's {found} as the vocabulary, not comparable with the paper's numbers (no "
                "paper column)")

    def missing_message(
        self,
        root: Path,
        tried: Sequence[Path],
        what: str,
        origin: str | None = None,
        looked_in: Sequence[DataRootCandidate] = (),
        annotation: Path | None = None,
    ) -> str:
        """``origin``: what chose the data root (its `DataRootCandidate`'s), said when it was not --data-root;
        ``looked_in``: every data root looked in, in search order, each named with what set it (said where there
        were several); ``annotation``: the annotation file found (the frames are missing: only where they go is
        said)."""
        canonical_ann = root / self.annotation_candidates[0]
        canonical_frames = root / self.frames_candidates[0]
        if len(looked_in) > 1:
            places = [f"{candidate.path} ({candidate.origin})" for candidate in looked_in]
            where = f"data roots looked in, in order: {', '.join(places)}"
        else:
            where = f"data root {root}" + (f", from {origin}" if origin else "")
        frames = f"the frames under {canonical_frames}/<video>/<frame>.jpg"
        put = (f"Put {frames}, beside the annotation file {annotation}" if annotation is not None else
               f"Put the annotation file at {canonical_ann} and {frames}")
        return (
            f"dataset {self.name} ({self.title}): {what} not found; tried {', '.join(str(p) for p in tried)}. "
            f"{self.download} {put} ({where}: set --data-root or ${DATA_ROOT_ENV})."
        )


def lvvis_frame_path(frames_root: Path, file_name: str) -> Path:
    """`<frames_root>/<video>/<frame>` from the last two components of `file_name`, split on '/' and '\\'.

    This is how the official LV-VIS loader rebuilds frame paths (its JSON file names may carry other prefixes or
    Windows separators).
    """
    parts = [part for part in re.split(r"[\\/]+", file_name) if part]
    if len(parts) < 2:
        raise ValueError(f"frame file name {file_name!r} has no '<video>/<frame>' components")
    return Path(frames_root) / parts[-2] / parts[-1]


_LVVIS_DOWNLOAD = (
    "Download LV-VIS (frames and *_instances.json) from https://github.com/haochenheheda/LVVIS (README links)."
)
_YTVIS19_DOWNLOAD = "Download YouTube-VIS 2019 from https://youtube-vos.org/dataset/vis/."
_YTVIS21_DOWNLOAD = "Download YouTube-VIS 2021 from https://youtube-vos.org/dataset/vis/."
_OVIS_DOWNLOAD = "Download OVIS from https://songbai.site/ovis/."
_BURST_DOWNLOAD = (
    "Download BURST annotations (https://github.com/Ali2500/BURST-benchmark) and the TAO val frames, then convert "
    "val/all_classes.json with CLIP-VIS tools/burst2ytvis.py to b2y_val.json."
)


def _ytvis(year: int, split: str, folder: str, public: bool, server: EvaluationServer | None) -> DatasetSpec:
    short = f"ytvis{str(year)[2:]}"
    folders = (f"ytvis{year}", short, f"ytvis_{year}")
    annotations = [f"{base}/{folder}.json" for base in folders]
    if year == 2021:  # the 2021 download ships {train,valid}/instances.json
        annotations += [f"{base}/{folder}/instances.json" for base in folders]
    return DatasetSpec(
        name=f"ytvis_{year}_{split}",
        title=f"YouTube-VIS {year} {split}",
        annotation_candidates=tuple(annotations),
        frames_candidates=tuple(f"{base}/{folder}/JPEGImages" for base in folders),
        num_classes=40,
        protocol="ytvis",
        has_public_gt=public,
        download=_YTVIS19_DOWNLOAD if year == 2019 else _YTVIS21_DOWNLOAD,
        server=server,
    )


_REGISTRY: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="lvvis_train",
        title="LV-VIS train",
        annotation_candidates=(
            "lvvis/train/train_ytvis_style.json",
            "lvvis/train/train_instances_.json",
            "lvvis/train/train_instances.json",
        ),
        frames_candidates=("lvvis/train/JPEGImages",),
        num_classes=1196,
        protocol="lvvis",
        has_public_gt=True,
        download=_LVVIS_DOWNLOAD,
        frame_path_rule="last_two_components",
    ),
    DatasetSpec(
        name="lvvis_val",
        title="LV-VIS val",
        annotation_candidates=("lvvis/val/val_instances_.json", "lvvis/val/val_instances.json"),
        frames_candidates=("lvvis/val/JPEGImages",),
        num_classes=1196,
        protocol="lvvis",
        has_public_gt=True,
        download=_LVVIS_DOWNLOAD,
        frame_path_rule="last_two_components",
    ),
    DatasetSpec(
        name="lvvis_test",
        title="LV-VIS test",
        annotation_candidates=("lvvis/test/test_instances.json", "lvvis/test/test_instances_.json"),
        frames_candidates=("lvvis/test/JPEGImages",),
        num_classes=1196,
        protocol="lvvis",
        has_public_gt=False,
        download=_LVVIS_DOWNLOAD,
        server=LVVIS_SERVER,
        frame_path_rule="last_two_components",
    ),
    _ytvis(2019, "train", "train", True, None),
    _ytvis(2019, "val", "valid", False, YTVIS_2019_SERVER),
    _ytvis(2021, "train", "train", True, None),
    _ytvis(2021, "val", "valid", False, YTVIS_2021_SERVER),
    DatasetSpec(
        name="ovis_val",
        title="OVIS val",
        annotation_candidates=("ovis/annotations_valid.json", "ovis/annotations/annotations_valid.json"),
        frames_candidates=("ovis/valid",),
        num_classes=25,
        protocol="ytvis",
        has_public_gt=False,
        download=_OVIS_DOWNLOAD,
        server=OVIS_SERVER,
    ),
    DatasetSpec(
        name="burst_val",
        title="BURST val (converted to YouTube-VIS format)",
        annotation_candidates=("burst/val/b2y_val.json", "burst/b2y_val.json"),
        frames_candidates=("burst/val",),
        num_classes=482,
        protocol="burst",
        has_public_gt=True,
        download=_BURST_DOWNLOAD,
    ),
)

DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({spec.name: spec for spec in _REGISTRY})


def dataset_names() -> list[str]:
    """Registered dataset names in registry order."""
    return [spec.name for spec in _REGISTRY]


def get_dataset(name: str) -> DatasetSpec:
    """The registered dataset `name` (case-insensitive; '-' accepted for '_')."""
    key = name.strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}")
    return DATASETS[key]


@dataclass(frozen=True)
class DataRootCandidate:
    """A folder that may hold the datasets, and what named it (for messages)."""

    path: Path
    origin: str  # "--data-root", "$CLIPVIS_DATASETS", "$DETECTRON2_DATASETS" or "the default ./datasets"


def data_root_candidates(
    data_root: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> list[DataRootCandidate]:
    """Where the datasets may be, in the order they are looked in: `data_root` alone when given; else
    $CLIPVIS_DATASETS and $DETECTRON2_DATASETS (those set, not empty) and ./datasets, each folder once."""
    if data_root is not None and str(data_root) != "":
        return [DataRootCandidate(Path(data_root).expanduser(), "--data-root")]
    env = os.environ if environ is None else environ
    named = [(Path(env[variable]).expanduser(), f"${variable}") for variable in (DATA_ROOT_ENV, LEGACY_DATA_ROOT_ENV)
             if env.get(variable)]
    candidates: dict[str, DataRootCandidate] = {}
    for path, origin in [*named, (DEFAULT_DATA_ROOT, f"the default ./{DEFAULT_DATA_ROOT}")]:
        candidates.setdefault(os.path.abspath(path), DataRootCandidate(path, origin))
    return list(candidates.values())


def resolve_data_root(
    data_root: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    holds: Callable[[Path], bool] | None = None,
) -> Path:
    """`data_root` if given; else the first of $CLIPVIS_DATASETS, $DETECTRON2_DATASETS and ./datasets for which
    ``holds(folder)`` is true (default: an existing folder); when none does, the first of them."""
    candidates = data_root_candidates(data_root, environ)
    test = holds or (lambda path: path.is_dir())
    return next((candidate.path for candidate in candidates if test(candidate.path)), candidates[0].path)


@dataclass(frozen=True)
class LocatedDataset:
    """A registered dataset found on disk. `frames_root` is None when frames were not required and are absent."""

    spec: DatasetSpec
    data_root: Path
    annotation_file: Path
    frames_root: Path | None

    def frame_paths(self, video: GtVideo) -> list[Path]:
        """Paths of the listed frames of `video` (requires the frames folder)."""
        if self.frames_root is None:
            raise DatasetNotFoundError(
                self.spec.missing_message(
                    self.data_root, [self.data_root / p for p in self.spec.frames_candidates], "frames folder"
                )
            )
        return [self.spec.frame_path(self.frames_root, name) for name in video.file_names]


def _first_existing(root: Path, candidates: Sequence[str], want_dir: bool) -> tuple[Path | None, list[Path]]:
    tried = [root / candidate for candidate in candidates]
    for path in tried:
        if path.is_dir() if want_dir else path.is_file():
            return path, tried
    return None, tried


def locate_dataset(
    name: str,
    data_root: Path | str | None = None,
    require_frames: bool = True,
    environ: Mapping[str, str] | None = None,
) -> LocatedDataset:
    """Find the annotation file (and frames folder) of dataset `name`, trying every documented path variant, in the
    first data root that holds them (`data_root` alone when given, see `data_root_candidates`).

    Raises `DatasetNotFoundError` with a message listing the paths tried, what to download and where to put it.
    """
    spec = get_dataset(name)
    candidates = data_root_candidates(data_root, environ)
    tried: list[Path] = []
    without_frames: list[tuple[DataRootCandidate, list[Path], Path]] = []  # roots holding the annotation file only
    for candidate in candidates:
        annotation, tried_here = _first_existing(candidate.path, spec.annotation_candidates, want_dir=False)
        tried += tried_here
        if annotation is None:
            continue
        frames, tried_frames = _first_existing(candidate.path, spec.frames_candidates, want_dir=True)
        if frames is None and require_frames:
            without_frames.append((candidate, tried_frames, annotation))
            continue
        return LocatedDataset(spec=spec, data_root=candidate.path, annotation_file=annotation, frames_root=frames)
    if without_frames:
        first, _, annotation = without_frames[0]
        tried_frames = [path for _, paths, _ in without_frames for path in paths]
        raise DatasetNotFoundError(spec.missing_message(first.path, tried_frames, "frames folder", first.origin,
                                                        looked_in=candidates, annotation=annotation))
    first = candidates[0]
    raise DatasetNotFoundError(spec.missing_message(first.path, tried, "annotation file", first.origin,
                                                    looked_in=candidates))


@dataclass(frozen=True)
class DatasetIndex:
    """Videos and vocabulary of an annotation file (masks not parsed)."""

    videos: list[GtVideo]
    categories: list[GtCategory]
    has_annotations: bool = True  # False: 'annotations' missing, null or empty (a split without public GT)

    @property
    def vocabulary(self) -> list[str]:
        """Category names in category-id order, verbatim."""
        return [category.name for category in sorted(self.categories, key=lambda category: category.id)]


def read_dataset_index(annotation_file: Path, check_annotations: bool = False) -> DatasetIndex:
    """Parse `videos` and `categories` of a YouTube-VIS style JSON for inference (their names, the model's classes,
    must be non-blank strings); ``check_annotations``: the annotations too, so that a malformed one stops the run
    before any video runs, not after all of them (LV-VIS val: ~2 s, before hours of inference)."""
    data = read_json_file(Path(annotation_file), "annotation file")
    annotated = isinstance(data, dict) and bool(data.get("annotations"))
    check_category_names(data, str(annotation_file))
    if isinstance(data, dict) and not (check_annotations and annotated):
        data = {"videos": data.get("videos"), "categories": data.get("categories"), "annotations": []}
    gt = parse_ground_truth(data, source=str(annotation_file))
    return DatasetIndex(videos=list(gt.videos.values()), categories=list(gt.categories), has_annotations=annotated)


@dataclass(frozen=True)
class DatasetInputs:
    """What the inference runner needs for one dataset."""

    spec: DatasetSpec
    gt_path: Path
    frames_root: Path
    vocabulary: list[str]
    videos: list[GtVideo]

    def frame_paths(self, video: GtVideo) -> list[Path]:
        return [self.spec.frame_path(self.frames_root, name) for name in video.file_names]

    def category_count_warning(self) -> str | None:
        """A warning line when the annotation file lists another number of categories than the dataset has."""
        return self.spec.category_count_warning(self.gt_path, len(self.vocabulary))

    def shared_frames_warning(self) -> str | None:
        """A warning line when videos of the annotation file list the same frame files (paths under the frames
        folder that exist), such as ``file_names`` without a folder of their own (``00000.jpg``) in every video:
        each video then runs on the same frames. A warning, not an error: clips cut from one long video with
        overlapping frames, or one clip listed once per referring expression, share frames on purpose. None when
        no two videos share a frame."""
        owner: dict[Path, int] = {}
        shared: list[tuple[int, int, Path]] = []
        for video in self.videos:
            try:
                paths = dict.fromkeys(self.frame_paths(video))  # a frame repeated in one video is not shared
            except ValueError:  # a frame name outside the frames folder: that video's own error when it runs
                continue
            for path in paths:
                first = owner.setdefault(path, video.id)
                if first != video.id and _is_file(path):
                    shared.append((first, video.id, path))
        if not shared:
            return None
        first, other, path = shared[0]
        frames = len({path for _, _, path in shared})
        videos = len({video_id for pair in shared for video_id in pair[:2]})
        return (f"{self.gt_path}: videos {first} and {other} both list the frame {path} ({frames} frame file(s) "
                f"listed by {videos} videos): those videos run on the same frames; give each video's file_names a "
                "folder of its own (<video>/<frame>.jpg) unless they are meant to share them")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def dataset_inputs(name: str, data_root: Path | str | None = None) -> DatasetInputs:
    """GT path, frames root, vocabulary and video list of dataset `name` (frames folder required).

    Raises `DatasetNotFoundError` (files missing) or `EvaluationInputError` (annotation file unreadable).
    """
    located = locate_dataset(name, data_root, require_frames=True)
    index = read_dataset_index(located.annotation_file, check_annotations=located.spec.has_public_gt)
    if not index.categories:
        raise EvaluationInputError(f"{located.annotation_file}: no categories, cannot build the vocabulary")
    if located.spec.has_public_gt and not index.has_annotations:  # found before the model runs, not after
        raise EvaluationInputError(f"{located.annotation_file}: no annotations, so {located.spec.name} cannot be "
                                   "scored (the file of a split without public ground truth?)")
    frames_root = located.frames_root
    if frames_root is None:  # locate_dataset(require_frames=True) never returns this; keeps the type precise
        raise DatasetNotFoundError(f"dataset {name}: frames folder not found")
    return DatasetInputs(
        spec=located.spec,
        gt_path=located.annotation_file,
        frames_root=frames_root,
        vocabulary=index.vocabulary,
        videos=index.videos,
    )


def write_server_zip(results: Sequence[Mapping[str, Any]] | Path, zip_path: Path) -> Path:
    """Write `zip_path` holding `results.json` (a results list, or the content of a results file) atomically."""
    if isinstance(results, Path | str):
        content = Path(results).read_bytes()
    else:
        content = json.dumps(list(results)).encode("utf-8")
    return write_zip_atomic(Path(zip_path), {SERVER_ZIP_MEMBER: content})


__all__ = [
    "DATASETS",
    "DATA_ROOT_ENV",
    "DEFAULT_DATA_ROOT",
    "LEGACY_DATA_ROOT_ENV",
    "DatasetError",
    "DatasetIndex",
    "DatasetInputs",
    "DatasetNotFoundError",
    "DataRootCandidate",
    "DatasetSpec",
    "EvaluationServer",
    "LocatedDataset",
    "UnknownDatasetError",
    "UnsafeFrameNameError",
    "data_root_candidates",
    "dataset_inputs",
    "dataset_names",
    "get_dataset",
    "locate_dataset",
    "lvvis_frame_path",
    "read_dataset_index",
    "resolve_data_root",
    "write_server_zip",
]
