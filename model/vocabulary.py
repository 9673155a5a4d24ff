"""The rules of class names, shared by the predictor and the CLI's reading of ``--vocab`` and ``--vocab-file``.

A class is a string of comma-separated synonyms, the first being its name (``"car, automobile"``: the official rule,
docs/fidelity.md, "Classification"). Torch-free: the CLI reads a vocabulary before it loads the model.
"""

from __future__ import annotations

import unicodedata


def split_synonyms(class_name: str) -> list[str]:
    """``"car, automobile"`` -> ``["car", "automobile"]`` (official rule: replace ", " by "," then split)."""
    return class_name.replace(", ", ",").split(",")


def class_name(entry: str) -> str:
    """The name of a class: its first synonym without the whitespace at its ends (``"car, automobile"`` ->
    ``"car"``), as `clipvis segment` names its categories."""
    return split_synonyms(entry)[0].strip()


def strip_name(name: str) -> str:
    """A class name without the whitespace and the invisible format characters (Unicode category Cf: a byte order
    mark left inside a file by `cat a.txt b.txt`, a zero-width space pasted with the name) at its ends, which made
    a class of their own that no GT name matched."""
    start, end = 0, len(name)
    while start < end and (name[start].isspace() or unicodedata.category(name[start]) == "Cf"):
        start += 1
    while end > start and (name[end - 1].isspace() or unicodedata.category(name[end - 1]) == "Cf"):
        end -= 1
    return name[start:end]


def stripped_synonyms(name: str) -> str:
    """``name`` without whitespace and invisible format characters at its ends and at each synonym's
    (``"car\\u200b, automobile"`` was a class of its own beside ``"car, automobile"``); unchanged when none has any."""
    synonyms = split_synonyms(name)
    if all(strip_name(synonym) == synonym.strip() for synonym in synonyms):
        return strip_name(name)
    return ", ".join(strip_name(synonym) for synonym in synonyms)


def name_key(name: str) -> str:
    """What two class names are compared by for duplicates: case aside, composed and decomposed accents alike (NFC,
    case-folded: "Café" and "cafe\\u0301" are one class)."""
    return unicodedata.normalize("NFC", name).casefold()


def shared_names(classes: list[list[str]]) -> list[tuple[str, list[int]]]:
    """The names that more than one class lists, as a class name or a synonym, compared by `name_key` ("Car" and
    "car" alike): each as first written, with the indices of the classes listing it, in order of first appearance.
    ``classes``: each class's synonyms, its name first (``[["cat", "dog"], ["dog"]]`` -> ``[("dog", [0, 1])]``).
    Such a vocabulary would find every object of that name once per class, with the same score."""
    listed: dict[str, tuple[str, list[int]]] = {}
    for index, synonyms in enumerate(classes):
        for synonym in synonyms:
            name, indices = listed.setdefault(name_key(synonym), (synonym, []))
            if not indices or indices[-1] != index:  # a class listing a name twice (`car, car`) is one class
                indices.append(index)
    return [(name, indices) for name, indices in listed.values() if len(indices) > 1]


def repeated_class_names(shared: list[tuple[str, list[int]]], classes: list[list[str]]) -> list[tuple[str, list[int]]]:
    """Of `shared_names`' ``shared``, the names that are each listing class's own name (a class name repeated: "Car"
    and "car"), said as duplicate class names; the others are a synonym another class lists too."""
    return [(name, indices) for name, indices in shared
            if all(name_key(classes[index][0]) == name_key(name) for index in indices)]
