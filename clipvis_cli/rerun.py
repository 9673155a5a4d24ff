"""Why `segment --skip-existing` runs an input again although an earlier run completed it in its output folder.

A rerun with other settings (``--overlay-min-score 0.5`` after 0.3, other ``--formats``, another vocabulary) ran
the model over every input of the batch again, and its log read as a fresh run's. `rerun_reason` compares the
earlier run's run.json (clipvis.cli.writers.manifest.RunManifest: weights, vocabulary, result options, source,
outputs) with this run's and says, by the options' names, what differs: ``--overlay-min-score differs from the
earlier run (0.5 vs 0.3)``, the value of this run first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipvis.cli.inputs import VideoSource
from clipvis.cli.messages import shown_path
from clipvis.cli.writers.manifest import STATUS_COMPLETE, RunManifest, source_fingerprint

# The result options run.json records (clipvis.cli.segment.SegmentOptions.result_options) as the command line names
# them; another key is named ``--key-name``.
OPTION_FLAGS = {"clipvis": "the clipvis version", "checkpoint": "the weights file"}
# Result options recorded only where their format is written (clipvis.cli.segment.SegmentOptions.result_options)
FORMAT_OPTIONS = {"overlay_min_score": "overlay", "media_url": "labelstudio"}
EARLIER = "the earlier run"


@dataclass
class RerunReason:
    """Why an input runs again: ``message`` (one line, without the input's name) and ``changed``, the names of the
    settings that differ (``--overlay-min-score``, ``the vocabulary``; empty when the input or an output changed)."""

    message: str
    changed: list[str]


def rerun_reason(previous: RunManifest | None, identities: Sequence[tuple[str, Mapping[str, Any]]],
                 vocabulary: Sequence[str], source: VideoSource, directory: Path) -> RerunReason | None:
    """Why ``source`` runs again although ``previous`` (its folder's run.json) says an earlier run completed it, or
    None when there was no complete earlier run. ``identities``: this run's ``(weights, result options)`` pairs
    (clipvis.cli.segment.SegmentOptions.identities); the one closest to the earlier run's is compared."""
    if previous is None or previous.status != STATUS_COMPLETE:
        return None
    differences, options = min(((_settings_differences(previous, weights, options, vocabulary), options)
                                for weights, options in identities), key=lambda pair: len(pair[0]), default=([], {}))
    missing = _formats_not_written(previous, options, differences)
    if missing is not None:
        return RerunReason(missing, [])
    if differences:
        names = [name for name, _ in differences]
        if len(differences) == 1:
            name, detail = differences[0]
            return RerunReason(f"{name} differs from {EARLIER} ({detail})", names)
        details = "; ".join(f"{name}: {detail}" for name, detail in differences)
        return RerunReason(f"{_listed(names)} differ from {EARLIER} ({details})", names)
    now = source_fingerprint(source)
    if "frames" not in previous.source:  # recorded before frame order was part of an image folder's identity
        now.pop("frames", None)
    if previous.source != now:
        change = _source_change(previous.source, now)
        return RerunReason(f"the input changed since {EARLIER} ({change})", [])
    for entry in previous.outputs:
        if not isinstance(entry, dict):
            continue
        path = directory / str(entry.get("file"))
        if not path.is_file():
            return RerunReason(f"{shown_path(path)}, written by {EARLIER}, is missing", [])
        try:
            size = path.stat().st_size
        except OSError:
            size = None
        if size != entry.get("bytes"):
            return RerunReason(f"{shown_path(path)} is not the size {EARLIER} wrote ({size} bytes, not "
                               f"{entry.get('bytes')}): cut short or replaced", [])
    return RerunReason(f"the settings recorded in {shown_path(directory / 'run.json')} differ from this run's", [])


def _formats_not_written(previous: RunManifest, options: Mapping[str, Any],
                         differences: Sequence[tuple[str, str]]) -> str | None:
    """Why the run runs again where the earlier one wrote every --formats of this run's but those whose files it
    could not write (``formats_not_written``: too many tracks for png-masks' ids): it recorded the formats it wrote,
    and the user changed nothing. None where a setting differs otherwise."""
    missing = previous.formats_not_written
    earlier = previous.options.get("formats") if isinstance(previous.options, dict) else None
    now = options.get("formats")
    if not missing or not differences or any(name != "--formats" for name, _ in differences) \
            or not isinstance(earlier, list) or not isinstance(now, list):
        return None
    added = [name for name in now if name not in earlier]
    if not added or any(name not in missing for name in added) or any(name not in now for name in earlier):
        return None
    reasons = list(dict.fromkeys(str(missing[name]) for name in added))
    return f"{_listed([f'{name}.zip' for name in added])} not written by {EARLIER} ({'; '.join(reasons)})"


def _settings_differences(previous: RunManifest, weights: str, options: Mapping[str, Any],
                          vocabulary: Sequence[str]) -> list[tuple[str, str]]:
    """``(setting, "now vs before")`` for each setting of this run that differs from ``previous``'s."""
    differences: list[tuple[str, str]] = []
    if weights != previous.weights:
        differences.append(("--weights", f"{weights} vs {previous.weights}"))
    if list(vocabulary) != list(previous.vocabulary):
        differences.append(("the vocabulary", _vocabulary_change(list(vocabulary), list(previous.vocabulary))))
    earlier = previous.options if isinstance(previous.options, dict) else {}
    formats_change = _formats_change(options, earlier)
    for key in sorted({*options, *earlier}, key=_option_order(options, earlier)):
        mine, theirs = options.get(key), earlier.get(key)
        if mine == theirs:
            continue
        if key in ("formats", "format_revisions"):  # one --formats, said where the first of them differs
            if formats_change is not None:
                differences.append(("--formats", formats_change))
                formats_change = None
            continue
        if key in FORMAT_OPTIONS and not _both_write(FORMAT_OPTIONS[key], options, earlier):
            continue  # recorded only where its format is written: the --formats that differ say it all
        if key == "checkpoint":
            if weights != previous.weights:  # said as --weights
                continue
            differences.append((OPTION_FLAGS[key], _checkpoint_change(mine, theirs, weights)))
        elif key in ("config", "clip_config"):
            differences.append((_flag(key), _config_change(mine, theirs)))
        else:
            now = _value(key, mine) if key in options else "the default"
            before = _value(key, theirs) if key in earlier else "the default"
            differences.append((_flag(key), f"{now} vs {before}"))
    return differences


def _formats_change(options: Mapping[str, Any], earlier: Mapping[str, Any]) -> str | None:
    """How this run's ``--formats`` differ from the earlier run's, in one detail: the lists (``now vs before``), and
    the formats both runs write whose files the earlier one wrote in an older layout (``format_revisions``, recorded
    for the formats a run writes: one the earlier run did not write is no older layout); None when neither."""
    parts: list[str] = []
    mine, theirs = options.get("formats"), earlier.get("formats")
    if mine != theirs:
        now = _value("formats", mine) if "formats" in options else "the default"
        before = _value("formats", theirs) if "formats" in earlier else "the default"
        parts.append(f"{now} vs {before}")
    revisions = options.get("format_revisions")
    earlier_revisions = earlier.get("format_revisions")
    written_before = theirs if isinstance(theirs, list) else []
    older = sorted(str(name) for name, revision in (revisions if isinstance(revisions, dict) else {}).items()
                   if name in written_before
                   and (earlier_revisions if isinstance(earlier_revisions, dict) else {}).get(name) != revision)
    if older:
        parts.append(f"{', '.join(older)} written in an older layout")
    return "; ".join(parts) or None


def _both_write(format_name: str, options: Mapping[str, Any], earlier: Mapping[str, Any]) -> bool:
    """Whether this run and the earlier one both write ``format_name`` (their recorded ``formats``)."""
    return all(isinstance(formats, list) and format_name in formats
               for formats in (options.get("formats"), earlier.get("formats")))


def _checkpoint_change(mine: Any, theirs: Any, weights: str) -> str:
    """How the weights file differs from the earlier run's (clipvis.cli.run_identity.checkpoint_identity): another
    size or modification time, or the same at another path (a release recorded by its cached file's path by an
    earlier clipvis, its cache moved since)."""
    mine = mine if isinstance(mine, dict) else {}
    theirs = theirs if isinstance(theirs, dict) else {}
    file = mine.get("file")
    if (mine.get("bytes"), mine.get("mtime_ns")) == (theirs.get("bytes"), theirs.get("mtime_ns")):
        now = f" ({file} now)" if file else ""
        return (f"{weights}: the same size and modification time at another path{now}, "
                f"{theirs.get('file', 'none recorded')} before")
    return f"{file or weights}: another size or modification time"


def _option_order(options: Mapping[str, Any], earlier: Mapping[str, Any]) -> Any:
    """Options in the order run.json records them (this run's first)."""
    order = {key: position for position, key in enumerate([*options, *earlier])}
    return lambda key: order[key]


def _flag(key: str) -> str:
    return OPTION_FLAGS.get(key, "--" + key.replace("_", "-"))


def _listed(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _value(key: str, value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if key == "formats" and isinstance(value, list):
        return ",".join(str(name) for name in value)
    return str(value)


def _config_change(mine: Any, theirs: Any) -> str:
    """A config file's change: another path, or its content edited since."""
    if not isinstance(mine, dict) or not isinstance(theirs, dict):
        mine_path = mine.get("path") if isinstance(mine, dict) else None
        theirs_path = theirs.get("path") if isinstance(theirs, dict) else None
        return f"{_value('', mine_path)} vs {_value('', theirs_path)}"
    if mine.get("path") != theirs.get("path"):
        return f"{mine.get('path')} vs {theirs.get('path')}"
    return f"{mine.get('path')} edited since (the settings clipvis uses from it)"


def _vocabulary_change(mine: list[str], theirs: list[str]) -> str:
    """``"class 2 is 'dog' now, 'cat' before"`` or ``"3 classes now, 2 before"``."""
    for position, (now, before) in enumerate(zip(mine, theirs, strict=False)):
        if now != before:
            return f"class {position + 1} is {now!r} now, {before!r} before"
    return f"{len(mine)} class(es) now, {len(theirs)} before"


def _source_change(before: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """What of an input's identity (`source_fingerprint`) changed, in words."""
    words = {"path": "its path", "size": "its size", "mtime_ns": "its modification time",
             "files": "its number of images", "frames": "its frames' names or order"}
    changed = [words.get(key, key) for key in [*now, *(k for k in before if k not in now)]
               if before.get(key) != now.get(key)]
    return _listed(changed) if changed else "its identity"
