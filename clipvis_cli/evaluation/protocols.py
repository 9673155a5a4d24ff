"""Evaluation protocols: which reference evaluator's behaviour to reproduce, and its category blocks.

* `ytvis` - `YTVOSeval` (youtubevos/cocoapi, vendored by Mask2Former/CLIP-VIS): crowd GTs are ignored, the GT size
  bucket uses the mean of the truthy `areas` as given.
* `lvvis` - `LVVISeval` (LV-VIS `evaluate/lvviseval.py`, copied into CLIP-VIS `tools/evaluate/`): `int()` on every
  area before the mean, crowd GTs are *not* ignored (still matchable many times); also reports base
  (`partition` 0/1) and novel (`partition` 2/3) categories.
* `burst` - CLIP-VIS `tools/evaluate/bursteval.py` (what `tools/mAP.py` runs for BURST, i.e. how the published BURST
  AP was computed). Same machinery as LV-VIS with two code differences, reproduced here: every object's average area
  is set to 0 (so all objects are "small", and the medium/large buckets hold no GT: APm/APl are undefined), and the
  "GT already matched" test is commented out, so any number of detections can match the same GT (duplicates count
  as true positives; recall can exceed 1). Blocks: base = LVIS frequency c/f, novel = r, common / uncommon by the
  `split` field that `burst2ytvis.py` adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clipvis.cli.evaluation.ground_truth import GtCategory, VideoGroundTruth


@dataclass(frozen=True)
class CategoryBlock:
    """A subset of categories reported separately: those whose `field` value is in `values`."""

    name: str
    """Block name, e.g. ``novel``."""
    suffix: str
    """Suffix of the block's stat names, e.g. ``n`` -> ``APn``."""
    field: str
    """GtCategory attribute holding the split value (``partition``, ``frequency`` or ``split``)."""
    values: frozenset[object]


@dataclass(frozen=True)
class EvaluationProtocol:
    """Behaviour switches that distinguish the reference evaluators (all share COCO-style greedy matching)."""

    name: str
    description: str
    crowd_gt_ignored: bool
    """YTVOSeval: a GT with iscrowd=1 is ignored in every area range."""
    truncate_areas: bool
    """LVVISeval: `int(area)` on every per-frame area before averaging."""
    zero_avg_area: bool
    """BURSTeval: every GT and detection gets average area 0."""
    gt_matched_once: bool
    """False for BURSTeval: a non-crowd GT can be matched by any number of detections."""
    blocks: tuple[CategoryBlock, ...] = ()


YTVIS_PROTOCOL = EvaluationProtocol(
    name="ytvis",
    description="YouTube-VIS / OVIS style (YTVOSeval)",
    crowd_gt_ignored=True,
    truncate_areas=False,
    zero_avg_area=False,
    gt_matched_once=True,
)

LVVIS_PROTOCOL = EvaluationProtocol(
    name="lvvis",
    description="LV-VIS (LVVISeval): base = partition 0/1, novel = partition 2/3",
    crowd_gt_ignored=False,
    truncate_areas=True,
    zero_avg_area=False,
    gt_matched_once=True,
    blocks=(
        CategoryBlock("base", "b", "partition", frozenset({0, 1})),
        CategoryBlock("novel", "n", "partition", frozenset({2, 3})),
    ),
)

BURST_PROTOCOL = EvaluationProtocol(
    name="burst",
    description="BURST as CLIP-VIS tools/mAP.py scores it (BURSTeval): base = LVIS frequency c/f, novel = r",
    crowd_gt_ignored=False,
    truncate_areas=True,
    zero_avg_area=True,
    gt_matched_once=False,
    blocks=(
        CategoryBlock("base", "b", "frequency", frozenset({"c", "f"})),
        CategoryBlock("novel", "n", "frequency", frozenset({"r"})),
        CategoryBlock("common", "c", "split", frozenset({"common"})),
        CategoryBlock("uncommon", "u", "split", frozenset({"uncommon"})),
    ),
)

PROTOCOLS: dict[str, EvaluationProtocol] = {
    protocol.name: protocol for protocol in (YTVIS_PROTOCOL, LVVIS_PROTOCOL, BURST_PROTOCOL)
}


def get_protocol(name: str | EvaluationProtocol) -> EvaluationProtocol:
    """The protocol called `name` (ytvis, lvvis, burst); raises ValueError listing the choices."""
    if isinstance(name, EvaluationProtocol):
        return name
    try:
        return PROTOCOLS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown evaluation protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}") from None


def default_protocol_name(gt: VideoGroundTruth) -> str:
    """`lvvis` when the GT categories carry an LV-VIS `partition` field, else `ytvis`."""
    return "lvvis" if any(category.partition is not None for category in gt.categories) else "ytvis"


def default_protocol_warnings(gt: VideoGroundTruth) -> list[str]:
    """What to say about the protocol `default_protocol_name` picks for ``gt``: a GT whose categories carry BURST's
    LVIS `frequency` (c/f/r) and the `split` (common/uncommon) that `burst2ytvis.py` adds, and no LV-VIS `partition`,
    is most likely BURST scored with `ytvis` (other numbers than the paper's BURST column: BURSTeval zeroes every
    area and lets a GT be matched many times). The protocol is not switched: an LV-VIS or custom file may carry a
    `frequency` too (LVIS-derived tools add it), and BURSTeval's rules would misreport such data."""
    if default_protocol_name(gt) != "ytvis":
        return []
    burst_like = [category for category in gt.categories
                  if category.frequency in BURST_FREQUENCIES and category.split in BURST_SPLITS]
    if not burst_like:
        return []
    return [f"{gt.source}: its categories carry BURST's frequency/split fields ({len(burst_like)} of "
            f"{len(gt.categories)}) and are scored with the ytvis protocol: pass --protocol burst to reproduce the "
            "paper's BURST numbers"]


BURST_FREQUENCIES = frozenset({"c", "f", "r"})
BURST_SPLITS = frozenset({"common", "uncommon"})


@dataclass(frozen=True)
class ResolvedBlock:
    """A category block applied to one GT: member category ids in GT file order."""

    block: CategoryBlock
    category_ids: tuple[int, ...]


def resolve_blocks(
    protocol: EvaluationProtocol, categories: Sequence[GtCategory]
) -> tuple[list[ResolvedBlock], list[str]]:
    """Member categories of each block of `protocol`, and warnings for blocks that cannot be reported.

    The reference selects block categories on the category axis at index `id - 1`, which is only right when the
    ids are exactly 1..K; it crashes on an empty block. Here membership is by category id (identical to the
    reference whenever the reference is well defined); an empty block is left out with a warning, and
    non-contiguous ids give a warning that the official script would not produce comparable numbers.
    """
    resolved: list[ResolvedBlock] = []
    warnings: list[str] = []
    if not protocol.blocks:
        return resolved, warnings
    ids = sorted(category.id for category in categories)
    if ids != list(range(1, len(ids) + 1)):
        warnings.append(
            f"category ids are not exactly 1..{len(ids)}: the official {protocol.name} script indexes categories "
            "by id-1 and would report other categories (or crash); blocks here are selected by category id"
        )
    for block in protocol.blocks:
        members = tuple(category.id for category in categories if getattr(category, block.field) in block.values)
        if not members:
            wanted = "/".join(sorted(str(value) for value in block.values))
            warnings.append(
                f"no GT category has {block.field} {wanted}: {block.name} metrics (AP{block.suffix} ...) not reported"
            )
            continue
        resolved.append(ResolvedBlock(block, members))
    return resolved, warnings
