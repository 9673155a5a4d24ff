"""clipvis.cli.rle: COCO run-length encoding of masks, against pycocotools directly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from clipvis.cli import rle


def random_masks(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, height, width), bool)
    for k in range(count):
        y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
        masks[k, y0 : y0 + rng.integers(1, height // 2), x0 : x0 + rng.integers(1, width // 2)] = True
        masks[k] ^= rng.random((height, width)) < 0.05
    return masks


def test_encode_gives_json_ready_compressed_rle_that_round_trips() -> None:
    mask = random_masks(1, 61, 97)[0]
    encoded = rle.encode(mask)
    assert encoded["size"] == [61, 97] and isinstance(encoded["counts"], str)
    json.dumps(encoded)
    np.testing.assert_array_equal(rle.decode(encoded), mask)
    # independent check: pycocotools decodes it (bytes counts) to the same mask
    raw = {"size": encoded["size"], "counts": encoded["counts"].encode("ascii")}
    np.testing.assert_array_equal(coco_mask.decode(raw).astype(bool), mask)


def test_encode_accepts_uint8_and_non_contiguous_views() -> None:
    mask = random_masks(1, 40, 50, seed=3)[0]
    assert rle.encode(mask.astype(np.uint8) * 255) == rle.encode(mask)
    transposed = np.ascontiguousarray(mask.T).T  # Fortran-ordered view
    assert rle.encode(transposed) == rle.encode(mask)


@pytest.mark.parametrize("shape", [(3, 61, 97), (2, 1, 1), (1, 1080, 1920)])
def test_encode_matches_pycocotools_reference(shape: tuple[int, int, int]) -> None:
    masks = random_masks(*shape, seed=5) if shape[1] > 2 else np.ones(shape, bool)
    reference = coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    expected = [{"size": r["size"], "counts": r["counts"].decode("ascii")} for r in reference]
    assert [rle.encode(mask) for mask in masks] == expected


def test_area_and_bbox_from_rle() -> None:
    mask = np.zeros((20, 30), bool)
    mask[4:9, 10:22] = True
    encoded = rle.encode(mask)
    assert rle.area(encoded) == 60
    assert rle.bbox(encoded) == [10.0, 4.0, 12.0, 5.0]
    empty = rle.encode(np.zeros((20, 30), bool))
    assert rle.area(empty) == 0 and rle.bbox(empty) == [0.0, 0.0, 0.0, 0.0]
    assert rle.areas([encoded, empty]) == [60, 0]
    assert rle.bboxes([encoded]) == [[10.0, 4.0, 12.0, 5.0]]


def test_decode_accepts_uncompressed_counts() -> None:
    # column-major runs: 2 zeros, 3 ones, 1 zero on a 3x2 mask
    mask = rle.decode({"size": [3, 2], "counts": [2, 3, 1]})
    np.testing.assert_array_equal(mask, np.array([[0, 1], [0, 1], [1, 0]], bool))


def test_encode_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError):
        rle.encode(np.zeros((2, 3, 4), bool))


def test_decode_matches_pycocotools_and_raises_no_numpy_2_warning() -> None:
    """pycocotools' decode warns with numpy 2 on every call (`__array__` without `copy`): PYTHONWARNINGS=error failed
    cvat-video and train, and a later numpy makes it an error. clipvis' decode gives pycocotools' masks without it,
    from compressed counts (text, bytes), uncompressed ones and pycocotools' merged objects."""
    import warnings

    rng = np.random.default_rng(0)
    for height, width in ((1, 1), (5, 7), (48, 85)):
        for density in (0.0, 0.05, 0.5, 1.0):
            mask = rng.random((height, width)) < density
            encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
            runs = rle.decompress_counts(encoded["counts"]).tolist()
            for given in (encoded, {"size": encoded["size"], "counts": encoded["counts"].decode()},
                          {"size": [height, width], "counts": runs}):
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    decoded = rle.decode(given)
                assert decoded.dtype == bool and np.array_equal(decoded, mask)
    with pytest.raises(ValueError, match="add up to 3, not 2x2 pixels"):
        rle.decode({"size": [2, 2], "counts": [1, 2]})


def _problem_by_hand(text: str | bytes, pixels: int) -> str | None:
    """compressed_counts_problems' verdict for one string, character by character (pycocotools' rleFrString)."""
    if not text:
        return "RLE with empty counts"
    if isinstance(text, str) and not text.isascii():
        return "RLE counts string with characters COCO's encoding never writes"
    data = text.encode("ascii") if isinstance(text, str) else text
    if any(not 48 <= byte < 112 for byte in data):
        return "RLE counts string with characters COCO's encoding never writes"
    runs: list[int] = []
    value = shift = 0
    for byte in data:
        c = byte - 48
        value |= (c & 0x1F) << shift
        shift += 5
        if not c & 0x20:
            if c & 0x10:
                value -= 1 << shift
            runs.append(value + runs[-2] if len(runs) > 2 else value)
            value = shift = 0
    if shift:
        return "RLE counts string cut short (it ends in the middle of a run length)"
    if min(runs) < 0 or max(runs) > pixels or sum(runs) != pixels:
        total = sum(runs) if min(runs) >= 0 and max(runs) <= pixels else "a negative or huge number of"
        return f"corrupt RLE counts (its runs add up to {total} pixels, not height x width = {pixels})"
    return None


def test_the_counts_check_gives_the_verdict_of_reading_each_string_by_hand() -> None:
    """compressed_counts_problems (vectorised over all strings) accepts and refuses exactly the strings a plain
    character-by-character reading does, with the same reason: valid masks, and strings cut short, with characters
    COCO never writes, negative or huge runs, runs adding up to another size, empty, non-ASCII, as str or bytes."""
    generator = np.random.default_rng(7)
    strings: list[str | bytes] = []
    pixels: list[int] = []
    for index in range(300):
        height, width = int(generator.integers(1, 40)), int(generator.integers(1, 40))
        mask = generator.random((height, width)) < generator.random()
        counts = rle.encode(mask)["counts"]
        strings.append(counts if index % 2 else counts.encode("ascii"))
        pixels.append(height * width)
    for index in range(1500):  # damaged copies: a character changed, dropped or added, a string cut
        source = int(generator.integers(0, 300))
        text = strings[source]
        text = text.decode("ascii") if isinstance(text, bytes) else text
        at = int(generator.integers(0, len(text)))
        character = chr(int(generator.integers(40, 120)))
        kind = index % 4
        damaged = (text[:at] + character + text[at + 1:] if kind == 0 else text[:at] + text[at + 1:] if kind == 1
                   else text[:at] + character + text[at:] if kind == 2 else text[:at])
        strings.append(damaged)
        pixels.append(int(generator.integers(1, 1600)) if index % 7 == 0 else pixels[source])
    strings += ["", b"", "caf\u00e9", "0P", "1" * 40, "o" * 9 + "0", "?" * 3]
    pixels += [4, 4, 4, 4, 49, 4, 12]
    expected = [_problem_by_hand(text, count) for text, count in zip(strings, pixels, strict=True)]
    assert rle.compressed_counts_problems(strings, pixels) == expected
    assert sum(problem is None for problem in expected) >= 300  # both kinds are there
    assert len({problem.split(" (")[0] for problem in expected if problem}) == 4
