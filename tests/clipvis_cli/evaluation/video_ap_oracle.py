"""A slow, literal transcription of the reference video-AP evaluators (ytvoseval.py / LV-VIS lvviseval.py)
(per-element loops) used as a test oracle.

It works on the raw GT dict and results list, shares no code with `clipvis.cli.evaluation`, and follows the reference
evaluators
step by step: per-frame pycocotools merge/area IoU over zip(frames), truthy-area means, greedy matching per
(video, category, area range, IoU threshold) with the scan-and-break rule, accumulation with mergesort, summary
means of entries > -1. Protocol switches: "ytvis" (crowd ignored), "lvvis" (int areas, crowd not ignored),
"burst" (CLIP-VIS bursteval: avg area 0, GTs matchable many times).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

DEFAULT_AREAS = (("all", 0.0, 1e10), ("small", 0.0, 16384.0), ("medium", 16384.0, 65536.0), ("large", 65536.0, 1e10))
IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1, endpoint=True)


def _to_rle(segmentation: Any, height: int, width: int) -> Any:
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def _avg(values: list[Any], protocol: str) -> float:
    if protocol == "burst":
        return 0
    kept = [int(v) if protocol in ("lvvis",) else v for v in values if v]
    if len(kept) == 0:
        return 0
    return np.array(kept).mean()


def reference_evaluate(
    gt: dict,
    results: list,
    protocol: str = "ytvis",
    area_ranges: tuple = DEFAULT_AREAS,
    max_dets: tuple = (1, 10, 100),
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Return (precision [T,R,K,A,M], recall [T,K,A,M], stats) exactly as the reference evaluators define them."""
    gt = copy.deepcopy(gt)
    results = copy.deepcopy(results)
    videos = {v["id"]: v for v in gt["videos"]}
    vid_ids = sorted(videos)
    cat_ids = sorted(c["id"] for c in gt["categories"])

    gts = [a for a in gt.get("annotations", []) if a["video_id"] in videos and a["category_id"] in cat_ids]
    for ann in gts:
        video = videos[ann["video_id"]]
        for i, seg in enumerate(ann["segmentations"]):
            if seg:
                ann["segmentations"][i] = _to_rle(seg, video["height"], video["width"])
        ann["avg_area"] = _avg(ann["areas"], protocol)
        ann.setdefault("iscrowd", 0)
    dts = []
    for index, res in enumerate(results):
        res["areas"] = [mask_utils.area(s) if s else None for s in res["segmentations"]]
        res["id"] = index + 1
        res["iscrowd"] = 0
        res["avg_area"] = _avg(res["areas"], protocol)
        if res["category_id"] in cat_ids:
            dts.append(res)

    by_pair_gt: dict = {}
    by_pair_dt: dict = {}
    for ann in gts:
        by_pair_gt.setdefault((ann["video_id"], ann["category_id"]), []).append(ann)
    for det in dts:
        by_pair_dt.setdefault((det["video_id"], det["category_id"]), []).append(det)

    def iou_seq(d_seq: list, g_seq: list) -> float:
        i = 0.0
        u = 0.0
        for d, g in zip(d_seq, g_seq, strict=False):  # zip semantics: extra frames ignored
            if d and g:
                i += mask_utils.area(mask_utils.merge([d, g], True))
                u += mask_utils.area(mask_utils.merge([d, g], False))
            elif not d and g:
                u += mask_utils.area(g)
            elif d and not g:
                u += mask_utils.area(d)
        return i / u if u > 0 else 0.0

    max_det = max_dets[-1]
    ious_by_pair = {}
    for v in vid_ids:
        for c in cat_ids:
            g = by_pair_gt.get((v, c), [])
            d = by_pair_dt.get((v, c), [])
            if not g and not d:
                continue
            order = np.argsort([-x["score"] for x in d], kind="mergesort")
            d = [d[i] for i in order][:max_det]
            ious = np.zeros((len(d), len(g)))
            for di in range(len(d)):
                for gi in range(len(g)):
                    ious[di, gi] = iou_seq(d[di]["segmentations"], g[gi]["segmentations"])
            ious_by_pair[v, c] = ious

    T, R, K, A, M = len(IOU_THRS), len(REC_THRS), len(cat_ids), len(area_ranges), len(max_dets)

    def evaluate_video(v: int, c: int, lo: float, hi: float) -> dict | None:
        g = by_pair_gt.get((v, c), [])
        d = by_pair_dt.get((v, c), [])
        if not g and not d:
            return None
        ignore_flags = []
        for ann in g:
            crowd_ignored = protocol == "ytvis" and bool(ann["iscrowd"])
            ignore_flags.append(1 if (crowd_ignored or ann["avg_area"] < lo or ann["avg_area"] > hi) else 0)
        gt_order = np.argsort(ignore_flags, kind="mergesort")
        g = [g[i] for i in gt_order]
        gt_ig = np.array([ignore_flags[i] for i in gt_order])
        dt_order = np.argsort([-x["score"] for x in d], kind="mergesort")
        d = [d[i] for i in dt_order[:max_det]]
        ious = ious_by_pair[v, c][:, gt_order] if g else ious_by_pair[v, c]
        crowd = [int(ann["iscrowd"]) for ann in g]
        gtm = np.zeros((T, len(g)))
        dtm = np.zeros((T, len(d)))
        dt_ig = np.zeros((T, len(d)))
        if g:
            for ti, thr in enumerate(IOU_THRS):
                for di, det in enumerate(d):
                    best = min([thr, 1 - 1e-10])
                    m = -1
                    for gi in range(len(g)):
                        if protocol != "burst" and gtm[ti, gi] > 0 and not crowd[gi]:
                            continue
                        if m > -1 and gt_ig[m] == 0 and gt_ig[gi] == 1:
                            break
                        if ious[di, gi] < best:
                            continue
                        best = ious[di, gi]
                        m = gi
                    if m == -1:
                        continue
                    dt_ig[ti, di] = gt_ig[m]
                    dtm[ti, di] = g[m]["id"]
                    gtm[ti, m] = det["id"]
        outside = np.array([x["avg_area"] < lo or x["avg_area"] > hi for x in d]).reshape((1, len(d)))
        dt_ig = np.logical_or(dt_ig, np.logical_and(dtm == 0, np.repeat(outside, T, 0)))
        return {"scores": [x["score"] for x in d], "dtm": dtm, "dt_ig": dt_ig, "gt_ig": gt_ig}

    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    for k, c in enumerate(cat_ids):
        for a, (_, lo, hi) in enumerate(area_ranges):
            evals = [evaluate_video(v, c, lo, hi) for v in vid_ids]
            evals = [e for e in evals if e is not None]
            if not evals:
                continue
            for m, md in enumerate(max_dets):
                scores = np.concatenate([np.array(e["scores"][0:md], dtype=float) for e in evals])
                inds = np.argsort(-scores, kind="mergesort")
                dtm = np.concatenate([e["dtm"][:, 0:md] for e in evals], axis=1)[:, inds]
                dt_ig = np.concatenate([e["dt_ig"][:, 0:md] for e in evals], axis=1)[:, inds]
                gt_ig = np.concatenate([e["gt_ig"] for e in evals])
                npig = np.count_nonzero(gt_ig == 0)
                if npig == 0:
                    continue
                tps = np.logical_and(dtm, np.logical_not(dt_ig))
                fps = np.logical_and(np.logical_not(dtm), np.logical_not(dt_ig))
                tp_sum = np.cumsum(tps, axis=1).astype(float)
                fp_sum = np.cumsum(fps, axis=1).astype(float)
                for t in range(T):
                    tp, fp = tp_sum[t], fp_sum[t]
                    nd = len(tp)
                    rc = tp / npig
                    pr = list(tp / (fp + tp + np.spacing(1)))
                    recall[t, k, a, m] = rc[-1] if nd else 0
                    for i in range(nd - 1, 0, -1):
                        if pr[i] > pr[i - 1]:
                            pr[i - 1] = pr[i]
                    q = [0.0] * R
                    for ri, pi in enumerate(np.searchsorted(rc, REC_THRS, side="left")):
                        if pi >= nd:
                            break
                        q[ri] = pr[pi]
                    precision[t, :, k, a, m] = q

    labels = [label for label, _, _ in area_ranges]

    def mean_of(ap: bool, iou: float | None, area: str, md_index: int, cats: list[int] | None) -> float:
        s = precision if ap else recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRS)[0]]
        s = s[:, :, :, labels.index(area), md_index] if ap else s[:, :, labels.index(area), md_index]
        if cats is not None:
            s = s[..., [cat_ids.index(c) for c in cats]]
        return float(np.mean(s[s > -1])) if np.any(s > -1) else -1.0

    def all_stats(cats: list[int] | None) -> dict[str, float]:
        return {
            "AP": mean_of(True, None, "all", 2, cats),
            "AP50": mean_of(True, 0.5, "all", 2, cats),
            "AP75": mean_of(True, 0.75, "all", 2, cats),
            "APs": mean_of(True, None, "small", 2, cats),
            "APm": mean_of(True, None, "medium", 2, cats),
            "APl": mean_of(True, None, "large", 2, cats),
            "AR1": mean_of(False, None, "all", 0, cats),
            "AR10": mean_of(False, None, "all", 1, cats),
            "AR100": mean_of(False, None, "all", 2, cats),
            "ARs": mean_of(False, None, "small", 2, cats),
            "ARm": mean_of(False, None, "medium", 2, cats),
            "ARl": mean_of(False, None, "large", 2, cats),
        }

    stats = all_stats(None)
    if protocol == "lvvis":
        base = [c["id"] for c in gt["categories"] if c.get("partition") in (0, 1)]
        novel = [c["id"] for c in gt["categories"] if c.get("partition") in (2, 3)]
        stats.update({f"{k}b": v for k, v in all_stats(base).items()})
        stats.update({f"{k}n": v for k, v in all_stats(novel).items()})
    return precision, recall, stats
