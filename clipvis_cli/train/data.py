"""Training data pipeline: augmentation, the sample mapper, deterministic infinite samplers, batching.

Every sample is identified by its position in the global sample stream (iteration x global batch + slot). The
sampler derives which record a position reads from ``(seed, epoch)`` and the augmentation draws its randomness
from ``(seed, position)``, so a run is reproducible, does not depend on the number of loader workers, resumes
exactly at any iteration, and a global batch split over N processes sees the very same samples as one process.
"""

from __future__ import annotations

import gc
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from clipvis.cli import rle
from clipvis.cli.train.records import (
    FrameRecord,
    RecordStore,
    TrainDataError,
    TrainRecord,
    category_image_counts,
    decode_segmentation,
)
from clipvis.cli.train.stopping import ignore_stop_signals
from clipvis.cli.video_io import VideoFrameSeeker, VideoReadError, quiet_metadata_warnings, resized_to, rgb_array
from clipvis.model.preprocess import padded_shape

if TYPE_CHECKING:
    from clipvis.cli.train.config import TrainConfig

LSJ_PAD_VALUE = 128  # detectron2 FixedSizeCrop's image padding
MAX_RETRIES = 20


@dataclass(frozen=True)
class AugmentationConfig:
    """``lsj``: flip, ResizeScale(min_scale..max_scale of image_size), FixedSizeCrop(image_size) (the image stage);
    ``shortest_edge``: ResizeShortestEdge(choice of min_sizes, max_size) + flip (the video stage)."""

    kind: Literal["lsj", "shortest_edge"] = "lsj"
    image_size: int = 1024
    min_scale: float = 0.1
    max_scale: float = 2.0
    min_sizes: tuple[int, ...] = (800,)
    max_size: int = 1333
    flip: bool = True

    @classmethod
    def from_config(cls, config: TrainConfig, video: bool) -> AugmentationConfig:
        """The augmentation of a config's ``INPUT`` block: ``lsj`` for images with ``DATASET_MAPPER_NAME``
        ``coco_instance_lsj``, else (videos always) ``shortest_edge``."""
        inp = config.tree["INPUT"]
        flip = inp.get("RANDOM_FLIP", "horizontal") != "none"
        if video or inp.get("DATASET_MAPPER_NAME") != "coco_instance_lsj":
            sizes = inp["MIN_SIZE_TRAIN"] if isinstance(inp["MIN_SIZE_TRAIN"], list) else [inp["MIN_SIZE_TRAIN"]]
            return cls(kind="shortest_edge", min_sizes=tuple(int(v) for v in sizes),
                       max_size=int(inp["MAX_SIZE_TRAIN"]), flip=flip)
        return cls(kind="lsj", image_size=int(inp["IMAGE_SIZE"]), min_scale=float(inp["MIN_SCALE"]),
                   max_scale=float(inp["MAX_SCALE"]), flip=flip)


# The most channels one cv2.resize call takes: 512 in OpenCV 4, 128 in OpenCV 5 (an image with more instances failed
# with "invalid count ... must be in [1, 128]").
_CV_MAX_CHANNELS = 128


def _resize(image: np.ndarray, masks: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """PIL bilinear for the image (detectron2's ResizeTransform), nearest for the masks: cv2's INTER_NEAREST_EXACT,
    which samples the source pixels PIL's NEAREST samples (detectron2's apply_segmentation; plain INTER_NEAREST is
    off by up to a pixel), up to _CV_MAX_CHANNELS masks a call."""
    from PIL import Image

    if (height, width) == image.shape[:2]:
        return image, masks
    image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    if masks.shape[0]:
        resized = [cv2.resize(chunk.transpose(1, 2, 0), (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
                   for chunk in np.array_split(masks, math.ceil(masks.shape[0] / _CV_MAX_CHANNELS))]
        masks = np.concatenate([r.reshape(height, width, -1).transpose(2, 0, 1) for r in resized])
    else:
        masks = np.zeros((0, height, width), np.uint8)
    return image, masks


Polygons = list[np.ndarray]  # one instance's polygon parts, each [K, 2] (x, y) in pixels
EMPTY_BOX = 1e-5  # detectron2 filter_empty_instances' box_threshold


def _clip_polygon(points: np.ndarray, width: float, height: float) -> np.ndarray:
    """The polygon ``[K, 2]`` cut to the rectangle [0, width] x [0, height] (Sutherland-Hodgman); ``[0, 2]`` when
    nothing of it is inside."""
    if len(points) and points.min() >= 0 and (points.max(0) <= (width, height)).all():
        return points  # inside already (most instances)
    for axis, bound, low in ((0, 0.0, True), (0, width, False), (1, 0.0, True), (1, height, False)):
        if not len(points):
            break
        inside = points[:, axis] >= bound if low else points[:, axis] <= bound
        out = []
        for k in range(len(points)):
            current, previous = points[k], points[k - 1]
            if inside[k] != inside[k - 1]:
                t = (bound - previous[axis]) / (current[axis] - previous[axis])
                out.append(previous + t * (current - previous))
            if inside[k]:
                out.append(current)
        points = np.array(out).reshape(-1, 2)
    return points


@dataclass
class _CoordinateMap:
    """The geometric part of an augmentation as a map of (x, y) coordinates: x' = sx * x + tx, y' = sy * y + ty."""

    sx: float = 1.0
    tx: float = 0.0
    sy: float = 1.0
    ty: float = 0.0
    window: tuple[float, float] | None = None  # (width, height) of the crop the mapped coordinates lie in, if any

    def flip(self, width: int) -> None:  # detectron2 HFlipTransform: x' = width - x
        self.sx, self.tx = -self.sx, width - self.tx

    def resize(self, height: int, width: int, new_h: int, new_w: int) -> None:  # ResizeTransform: scaled
        fx, fy = new_w / width, new_h / height
        self.sx, self.tx, self.sy, self.ty = self.sx * fx, self.tx * fx, self.sy * fy, self.ty * fy

    def shift(self, dx: int, dy: int) -> None:  # a crop's origin
        self.tx, self.ty = self.tx - dx, self.ty - dy

    def nonempty(self, polygons: Polygons) -> bool:
        """Whether the mapped polygons are an instance detectron2 keeps: its ``CropTransform`` cuts them to the crop
        (``window``), and ``filter_empty_instances`` keeps the instance when the box of what is left is wider and
        taller than 1e-5 pixel, however few pixels the polygons cover once drawn (a sub-pixel object stays, its
        target mask empty)."""
        scale, shift = np.array([self.sx, self.sy]), np.array([self.tx, self.ty])
        points = [part * scale + shift for part in polygons]
        if self.window is not None:
            points = [_clip_polygon(part, *self.window) for part in points]
        points = [part for part in points if len(part)]
        if not points:
            return False
        every = np.concatenate(points)
        width, height = every.max(0) - every.min(0)
        return bool(width > EMPTY_BOX and height > EMPTY_BOX)

    def rasterize(self, polygons: Polygons, height: int, width: int) -> np.ndarray:
        """The mapped polygons drawn on a ``height x width`` canvas (pycocotools, parts merged; what lies outside
        the canvas is clipped), as detectron2's polygon masks are after the transforms."""
        from pycocotools import mask as coco_mask

        scale, shift = np.array([self.sx, self.sy]), np.array([self.tx, self.ty])
        flat = [(part * scale + shift).reshape(-1).tolist() for part in polygons]
        merged = coco_mask.merge(coco_mask.frPyObjects(flat, height, width))
        return rle.decode(merged).astype(np.uint8)  # clipvis.cli.rle.decode: pycocotools' warns with numpy 2


def augment_instances(
    image: np.ndarray, masks: np.ndarray, config: AugmentationConfig, rng: np.random.Generator,
    polygons: Sequence[Polygons | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """image ``[H, W, 3]`` uint8, masks ``[M, H, W]`` uint8 -> the augmented image and ``[N, H', W']`` uint8 masks.

    Without ``polygons``, ``masks`` are every instance (N = M). With ``polygons`` (one entry per instance, N of
    them), instance ``i`` is a polygon annotation where ``polygons[i]`` is not None: as in the official mappers
    (detectron2's ``transform_instance_annotations``), its coordinates go through the flip, resize and crop and are
    rasterized at the output size. ``masks`` then holds only the other instances' bitmasks, in instance order: RLE
    annotations have only a bitmask, resized nearest-neighbour as detectron2 does.

    Also returns ``keep`` (``[N]`` bool), the instances the official mappers keep after the augmentation: with
    large-scale jitter (``lsj``, COCOInstanceNewBaselineDatasetMapper) a polygon instance whose part inside the crop
    has a box (``_CoordinateMap.nonempty``), even one too small to cover a pixel; a bitmask (and every instance of
    the ``shortest_edge`` stage, whose mapper draws polygons as bitmasks first) with at least one pixel.
    """
    polygons = list(polygons) if polygons is not None else [None] * masks.shape[0]
    bitmask = [i for i, p in enumerate(polygons) if p is None]
    if len(bitmask) != masks.shape[0]:
        raise ValueError(f"{masks.shape[0]} bitmasks for {len(bitmask)} instances without polygons")
    coordinates = _CoordinateMap()
    out_image, out_masks = _augment_bitmaps(image, masks, config, rng, coordinates)
    height, width = out_image.shape[:2]
    result = out_masks
    if len(bitmask) != len(polygons):
        result = np.empty((len(polygons), height, width), np.uint8)
        result[bitmask] = out_masks
        for i, parts in enumerate(polygons):
            if parts is not None:
                result[i] = coordinates.rasterize(parts, height, width)
    keep = result.reshape(result.shape[0], height * width).any(1)
    if config.kind == "lsj":
        for i, parts in enumerate(polygons):
            if parts is not None:
                keep[i] = coordinates.nonempty(parts)
    return out_image, result, keep


def _augment_bitmaps(
    image: np.ndarray, masks: np.ndarray, config: AugmentationConfig, rng: np.random.Generator,
    coordinates: _CoordinateMap,
) -> tuple[np.ndarray, np.ndarray]:
    """The augmentation of the image and the bitmasks; ``coordinates`` follows it (for polygons)."""
    if config.kind == "lsj":
        if config.flip and rng.uniform() < 0.5:
            image, masks = image[:, ::-1], masks[:, :, ::-1]
            coordinates.flip(image.shape[1])
        height, width = image.shape[:2]
        scale = rng.uniform(config.min_scale, config.max_scale)
        target = config.image_size * scale
        factor = min(target / height, target / width)
        new_h, new_w = max(int(round(height * factor)), 1), max(int(round(width * factor)), 1)
        image, masks = _resize(np.ascontiguousarray(image), np.ascontiguousarray(masks), new_h, new_w)
        coordinates.resize(height, width, new_h, new_w)
        size = config.image_size
        # One draw for both axes, as detectron2's FixedSizeCrop._get_crop (max_offset * np.random.uniform()).
        fraction = rng.uniform()
        off_y = int(round(max(new_h - size, 0) * fraction))
        off_x = int(round(max(new_w - size, 0) * fraction))
        coordinates.shift(off_x, off_y)
        coordinates.window = (min(new_w - off_x, size), min(new_h - off_y, size))  # FixedSizeCrop's CropTransform
        image = image[off_y:off_y + size, off_x:off_x + size]
        masks = masks[:, off_y:off_y + size, off_x:off_x + size]
        out_image = np.full((size, size, 3), LSJ_PAD_VALUE, np.uint8)
        out_image[: image.shape[0], : image.shape[1]] = image
        out_masks = np.zeros((masks.shape[0], size, size), np.uint8)
        out_masks[:, : masks.shape[1], : masks.shape[2]] = masks
        return out_image, out_masks
    from clipvis.model.preprocess import resized_shape

    short = int(config.min_sizes[int(rng.integers(len(config.min_sizes)))])
    height, width = image.shape[:2]
    new_h, new_w = resized_shape(height, width, short, config.max_size)
    image, masks = _resize(image, masks, new_h, new_w)
    coordinates.resize(height, width, new_h, new_w)
    if config.flip and rng.uniform() < 0.5:
        image, masks = image[:, ::-1], masks[:, :, ::-1]
        coordinates.flip(new_w)
    return np.ascontiguousarray(image), np.ascontiguousarray(masks)


@dataclass
class Sample:
    """One augmented training sample."""

    image: torch.Tensor  # [3, H, W] uint8 RGB
    masks: torch.Tensor  # [N, H, W] bool
    position: int  # in the global sample stream
    name: str
    warnings: list[str] = field(default_factory=list)


class SampleError(Exception):
    """A sample that cannot be produced (corrupt image); the message names the file. ``too_large``: an image past
    Pillow's decompression limit (the data's fault, not a wrong image folder's)."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def read_frame(frame: FrameRecord, seeker: VideoFrameSeeker | None = None) -> np.ndarray:
    """The frame as ``[H, W, 3]`` uint8 RGB, from its image file or else from its source video (numbered as
    ``segment`` numbers them; ``seeker`` keeps what it learned of the videos between calls)."""
    try:
        return _read_frame(frame, seeker)
    except OSError as error:  # a name the file system refuses (too long), or a file that cannot be looked at
        name = str(frame.path)
        shown = name if len(name) <= 120 else f"{name[:60]}...{name[-40:]}"
        raise SampleError(f"{shown}: skipped unreadable image ({error.strerror or error})") from None


def _read_frame(frame: FrameRecord, seeker: VideoFrameSeeker | None) -> np.ndarray:
    from PIL import Image

    path = frame.path
    if not path.is_file() and frame.source_video is not None and not frame.source_video.exists():
        raise SampleError(f"{path}: skipped frame: no such image, and the video (or image folder) it was segmented "
                          f"from, {frame.source_video}, as the annotation file records, is missing")
    image_folder = frame.source_video is not None and frame.source_video.is_dir()
    if not path.is_file() and image_folder:
        path = frame.source_video / path.name  # the image folder segment read (its coco.json / ytvis.json say so)
    if path.is_file() or frame.source_video is None or image_folder:
        quiet_metadata_warnings()
        try:
            with warnings.catch_warnings():  # a user's own large image (aerial, pathology): no raw Pillow warning
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as handle:
                    image = rgb_array(handle)
        except Image.DecompressionBombError as exc:  # as segment: past Pillow's limit, refused (memory), not decoded
            size = re.search(r"\((\d+) pixels\)", str(exc))
            pixels = f"{int(size.group(1)):,} px" if size else "too many pixels"
            raise SampleError(f"{path}: skipped image too large to decode safely ({pixels}; the limit is "
                              f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,} px): downscale it, or tile it into smaller "
                              "images", too_large=True) from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure means a corrupt/unreadable file
            reason = " ".join(str(exc).split())[:120]
            raise SampleError(f"{path}: skipped unreadable image ({reason})") from exc
        if image_folder:  # an image of another size than the folder's first (the annotations' size), as segment read
            image = resized_to(image, (frame.height, frame.width))  # it: resized to that size
        read = f"{path}: skipped image"
    else:  # the frame as segment read it: numbered, and sized as the first frame, as segment's reader does
        try:
            image = (seeker or VideoFrameSeeker()).frame(frame.source_video, frame.frame_index)
        except VideoReadError as error:
            raise SampleError(f"{frame.source_video}: skipped frame {frame.frame_index} ({error})") from None
        read = f"{frame.source_video}: skipped frame {frame.frame_index}"
    if image.shape[:2] != (frame.height, frame.width):
        raise SampleError(
            f"{read} of size {image.shape[1]}x{image.shape[0]}, the annotations say {frame.width}x{frame.height}"
        )
    return image


class TrainDataset(Dataset):
    """Records -> augmented samples. Indexed by ``(record index, stream position)`` keys from
    :class:`StreamBatchSampler`; a record that fails (corrupt image) is replaced by another one drawn from the
    same position's RNG, and the failure is reported in the sample's ``warnings``.

    ``records`` is kept as a :class:`RecordStore` (bytes the loader workers share with the main process, however
    many records they read: a list of record objects was copied into each worker as it read them); the caller
    may drop its own record objects once the dataset is made."""

    def __init__(self, records: Sequence[TrainRecord], augmentation: AugmentationConfig, seed: int = 0) -> None:
        self.records = records if isinstance(records, RecordStore) else RecordStore(records)
        self.augmentation = augmentation
        self.seed = seed
        self.seeker = VideoFrameSeeker()  # frames of videos without extracted images (one per worker process)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> Sample:
        index, position = key
        rng = np.random.default_rng([self.seed, position])
        warnings: list[str] = []
        too_large = True
        for _ in range(MAX_RETRIES):
            try:
                sample = self._map(self.records[index], rng, position)
                sample.warnings = warnings + sample.warnings
                return sample
            except SampleError as exc:
                warnings.append(str(exc))
                too_large = too_large and exc.too_large
                index = int(rng.integers(len(self.records)))
        if too_large:  # the images were found: --images is not to blame
            raise TrainDataError(f"{MAX_RETRIES} samples in a row could not be read, their images too large; the last: "
                                 f"{warnings[-1]}")
        raise TrainDataError(
            f"{MAX_RETRIES} samples in a row could not be read (is --images, or a dataset's image folder, the one its "
            f"annotations name?); the last: {warnings[-1]}"
        )

    def _map(self, record: TrainRecord, rng: np.random.Generator, position: int) -> Sample:
        frame = record.frames[int(rng.integers(len(record.frames)))] if len(record.frames) > 1 else record.frames[0]
        image = read_frame(frame, self.seeker)
        warnings: list[str] = []
        masks, polygons = [], []
        for inst in frame.instances:
            if isinstance(inst.segmentation, list):  # checked when read; drawn after the augmentation, not here
                polygons.append([np.asarray(part, np.float64).reshape(-1, 2) for part in inst.segmentation])
                continue
            try:
                masks.append(decode_segmentation(inst.segmentation, frame.height, frame.width))
            except Exception as exc:  # noqa: BLE001 - pycocotools raises several types on malformed input
                warnings.append(f"{inst.name}: skipped bad annotation ({' '.join(str(exc).split())[:80]})")
                continue
            polygons.append(None)
        stack = np.stack(masks) if masks else np.zeros((0, frame.height, frame.width), np.uint8)
        # Empty instances (e.g. cropped away) are filtered, by the official mappers' rule (``augment_instances``).
        image, stack, keep = augment_instances(image, stack, self.augmentation, rng, polygons)
        return Sample(
            image=torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            masks=torch.from_numpy(stack[keep].astype(bool)),
            position=position,
            name=record.name,
            warnings=warnings,
        )


def aspect_ratio_groups(records: Sequence[TrainRecord], augmentation: AugmentationConfig) -> np.ndarray:
    """detectron2's aspect-ratio groups of the augmented samples (0: width > height, 1: not), known from the
    records' sizes: the video stage's resize keeps a frame's orientation (the frames of a video share one size), and
    large-scale jitter makes every sample a square (one group: grouping changes nothing)."""
    if augmentation.kind == "lsj":
        return np.ones(len(records), np.int64)
    return np.array([0 if r.frames[0].width > r.frames[0].height else 1 for r in records], np.int64)


def repeat_factors(records: Sequence[TrainRecord], threshold: float) -> np.ndarray:
    """LVIS repeat factors: per record ``max over its categories of max(1, sqrt(threshold / f_c))``, ``f_c`` the
    fraction of records containing category c."""
    counts = category_image_counts(records)
    total = max(len(records), 1)
    category_factor = {c: max(1.0, math.sqrt(threshold / (n / total))) for c, n in counts.items()}
    return np.array([max((category_factor[c] for c in r.category_ids), default=1.0) for r in records])


class StreamBatchSampler:
    """Infinite per-process batches of ``(record index, position)`` keys over one global sample stream.

    Epoch e of the stream is a permutation (seeded by ``(seed, e)``) of the record indices, each repeated
    ``floor(r) + Bernoulli(frac(r))`` times when repeat factors ``r`` are given. Iteration i takes positions
    ``[i*B, (i+1)*B)`` of the stream (B = global batch); process ``rank`` of ``world`` gets the
    ``rank``-th contiguous share. ``start_iteration`` skips what earlier iterations consumed (exact resume).

    With ``groups`` (a group number per record: :func:`aspect_ratio_groups`) every global batch holds records of one
    group, as detectron2's ``AspectRatioGroupedDataset``: the stream's records go into one bucket per group and a
    batch is made when a bucket fills. Grouping the global batch (not each process' share, as detectron2 does) keeps
    the batches the same on any number of processes.
    """

    def __init__(
        self,
        num_records: int,
        global_batch: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        start_iteration: int = 0,
        factors: np.ndarray | None = None,
        groups: np.ndarray | None = None,
    ) -> None:
        if global_batch % world:
            raise ValueError(f"the global batch {global_batch} is not divisible by the {world} processes")
        self.num_records = num_records
        self.global_batch = global_batch
        self.seed = seed
        self.rank = rank
        self.world = world
        self.start_iteration = start_iteration
        self.factors = factors
        self.groups = groups

    def _epoch(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 1_000_003, epoch])
        if self.factors is None:
            indices = np.arange(self.num_records)
        else:
            whole = np.floor(self.factors)
            reps = whole + (rng.uniform(size=len(self.factors)) < self.factors - whole)
            indices = np.repeat(np.arange(self.num_records), reps.astype(np.int64))
        return indices[rng.permutation(len(indices))]

    def _stream(self, epoch: int = 0, offset: int = 0) -> Iterator[int]:
        """The record indices of the stream from position ``offset`` of epoch ``epoch`` on."""
        while True:
            yield from self._epoch(epoch)[offset:].tolist()
            epoch, offset = epoch + 1, 0

    def _batches(self) -> Iterator[list[int]]:
        """The global batches of record indices, in order, from batch ``start_iteration`` on."""
        epoch, offset, buckets = self._skip(self.start_iteration)
        stream = self._stream(epoch, offset)
        if self.groups is None:
            while True:
                yield [next(stream) for _ in range(self.global_batch)]
        for index in stream:
            bucket = buckets.setdefault(int(self.groups[index]), [])
            bucket.append(index)
            if len(bucket) == self.global_batch:
                yield bucket[:]
                bucket.clear()

    def _skip(self, batches: int) -> tuple[int, int, dict[int, list[int]]]:
        """Where the stream stands once ``batches`` global batches were made: its epoch, the position in that epoch
        of the next record, and the records waiting in the groups' buckets. Computed an epoch at a time with numpy,
        not by making the batches (a resume at iteration 368,750 of batch 16 replayed 5.9M records in Python)."""
        buckets: dict[int, list[int]] = {}
        epoch = 0
        if self.groups is None:  # a batch is the stream's next global_batch records
            remaining = batches * self.global_batch
            while True:
                length = len(self._epoch(epoch))
                if remaining < length or length == 0:
                    return epoch, remaining, buckets
                remaining -= length
                epoch += 1
        if batches == 0:
            return 0, 0, buckets
        size = self.global_batch
        while True:
            indices = self._epoch(epoch)
            labels = self.groups[indices]
            # per group: its records' positions in this epoch, and where a bucket fills (the batches made here)
            members = {int(g): np.flatnonzero(labels == g) for g in np.unique(labels)}
            filled = [where[size - 1 - len(buckets.get(g, ())) % size::size] for g, where in members.items()]
            ends = np.sort(np.concatenate(filled)) if filled else np.empty(0, np.int64)
            if len(ends) < batches:  # all of this epoch goes by: the buckets keep what did not fill one
                for g, where in members.items():
                    kept = (len(buckets.get(g, ())) + len(where)) % size
                    waiting = np.concatenate([np.asarray(buckets.get(g, []), np.int64), indices[where]])
                    buckets[g] = waiting[len(waiting) - kept:].tolist()
                batches -= len(ends)
                epoch += 1
                continue
            stop = int(ends[batches - 1]) + 1  # the last skipped batch is made by the record before this position
            for g, where in members.items():
                taken = where[where < stop]
                kept = (len(buckets.get(g, ())) + len(taken)) % size
                waiting = np.concatenate([np.asarray(buckets.get(g, []), np.int64), indices[taken]])
                buckets[g] = waiting[len(waiting) - kept:].tolist()
            if stop == len(indices):
                return epoch + 1, 0, buckets
            return epoch, stop, buckets

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_rank = self.global_batch // self.world
        position = self.start_iteration * self.global_batch
        for batch in self._batches():
            first = self.rank * per_rank
            yield [(batch[first + k], position + first + k) for k in range(per_rank)]
            position += self.global_batch


@dataclass
class Batch:
    """A collated batch, images padded bottom/right to a multiple of the size divisibility."""

    images: torch.Tensor  # [B, 3, Hp, Wp] uint8 (padding 0; the trainer zeroes the normalised padding)
    image_sizes: list[tuple[int, int]]
    masks: list[torch.Tensor]  # B x [N_b, Hp, Wp] bool
    positions: list[int]
    names: list[str]
    warnings: list[str]

    def pin_memory(self) -> Batch:
        self.images = self.images.pin_memory()
        self.masks = [m.pin_memory() for m in self.masks]
        return self


class Collate:
    """Samples -> :class:`Batch` padded bottom/right to a common size divisible by ``divisibility``; 0 or below (as
    1): to the batch's largest size only, as detectron2's ``ImageList.from_tensors`` and the model's own padding
    (``padded_shape``) take ``SIZE_DIVISIBILITY`` 0; either way to at least 32 pixels a side (the backbones' least)."""

    def __init__(self, divisibility: int = 32) -> None:
        self.divisibility = divisibility

    def __call__(self, samples: list[Sample]) -> Batch:
        """B samples (``image [3, H_b, W_b]`` uint8, ``masks [N_b, H_b, W_b]`` bool) -> a ``Batch``: ``images
        [B, 3, Hp, Wp]`` uint8 and ``masks`` B x ``[N_b, Hp, Wp]`` bool, zero-padded bottom/right, with each
        sample's own ``image_sizes`` ``(H_b, W_b)``, positions, names and warnings."""
        height, width = padded_shape(max(s.image.shape[1] for s in samples), max(s.image.shape[2] for s in samples),
                                     self.divisibility)
        images = torch.zeros(len(samples), 3, height, width, dtype=torch.uint8)
        masks = []
        for i, s in enumerate(samples):
            h, w = s.image.shape[1:]
            images[i, :, :h, :w] = s.image
            padded = torch.zeros(s.masks.shape[0], height, width, dtype=torch.bool)
            padded[:, :h, :w] = s.masks
            masks.append(padded)
        return Batch(
            images=images,
            image_sizes=[tuple(s.image.shape[1:]) for s in samples],
            masks=masks,
            positions=[s.position for s in samples],
            names=[s.name for s in samples],
            warnings=[w for s in samples for w in s.warnings],
        )


class ForkSharingLoader(torch.utils.data.DataLoader):
    """A DataLoader whose worker processes, forks of this one, share its Python objects rather than copy them.

    A worker's garbage collector, whenever it runs, writes to the header of every object it tracks, so each worker
    came to copy every page holding the process' Python objects (the modules, the model's objects, the config: tens
    to hundreds of MB per worker, times the workers and the GPUs of a node). The objects of this process are frozen
    (``gc.freeze``: the collector leaves them alone) while the workers start, so the workers inherit them frozen.
    Where nothing was frozen before (a library caller), they are unfrozen again at once; where the process froze its
    objects already (the ``clipvis`` command does after its imports, clipvis.cli.gc_pause), they stay frozen, as
    those did: ``gc.unfreeze`` would release those too."""

    def __iter__(self) -> Iterator[Any]:
        if self.num_workers == 0 or getattr(self, "_iterator", None) is not None:  # no fork, or workers running
            return super().__iter__()
        frozen_before = gc.get_freeze_count()
        gc.collect()  # no garbage frozen into the workers
        gc.freeze()
        try:
            return super().__iter__()  # starts (forks) the workers
        finally:
            if not frozen_before:
                gc.unfreeze()


def build_loader(
    dataset: TrainDataset,
    sampler: StreamBatchSampler,
    num_workers: int,
    divisibility: int = 32,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader that yields :class:`Batch` forever (worker processes when ``num_workers > 0``, which leave stop
    signals to the main process and share its Python objects: :class:`ForkSharingLoader`)."""
    return ForkSharingLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=Collate(divisibility),
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        worker_init_fn=ignore_stop_signals if num_workers > 0 else None,
    )

