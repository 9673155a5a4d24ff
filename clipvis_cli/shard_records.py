"""`--shard K/N` jobs that saw different inputs: each shard records the input list it was cut from in the output root,
and at its end finds the inputs that fall to no shard.

Shards do not talk to each other (job array tasks, GNU parallel jobs): each lists the inputs itself and keeps every
N-th of them sorted by path (clipvis.cli.distributed.Shard). Shards started at different times over a folder that
changed in between (a file added or removed), or given other inputs (another glob), cut different lists: an input
can then fall to a shard that ran over a list where it held another position, and be processed by none, every
shard exiting 0. So every shard writes, into ``OUTPUT/.clipvis.shards/`` (hidden: no folder search or export
lists it), a record ``K-of-N.json`` of the list it ran over (its number of inputs and the SHA-256 of the list; the
list itself once, as ``<sha256>.json``, shared by every shard that cut the same one). Each file is written under a
temporary name and renamed, so shards that run side by side read whole files only.

At its end a shard reads the records of the other shards of the same N and counts an input of its own list as
taken when its own position falls to this shard, to a shard with no record yet (it will cut the list when it
runs), or to a shard whose recorded list holds it at a position of that shard's. What is left falls to no shard:
said in one line and exit 1 (clipvis.cli.commands.segment). A shard cannot know whether a shard recorded with
another list will run again: a rerun of every shard once the inputs are final ends clean, and `--skip-existing`
keeps the finished work.

The inputs are recorded by their path relative to the output root (both resolved), so that shards started from
other working folders, or on machines that mount the shared folder elsewhere, record the same list.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clipvis.cli.atomic import atomic_write_json
from clipvis.cli.distributed import Shard

SHARD_RECORDS = ".clipvis.shards"  # in the output root: what each shard ran over


@dataclass(frozen=True)
class ShardList:
    """The inputs a shard was cut from, in the shards' order (sorted by path), each as a path relative to the output
    root (``names``), and how this process shows each of them (``shown``)."""

    names: list[str]
    shown: list[str]

    @classmethod
    def of(cls, paths: Sequence[str], output: Path) -> ShardList:
        """``paths``: the inputs as given, sorted as the shards cut them."""
        root = os.path.abspath(output)
        return cls([os.path.relpath(os.path.abspath(path), root) for path in paths], list(paths))

    @property
    def digest(self) -> str:
        return hashlib.sha256("\0".join(self.names).encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class ShardRecords:
    """This shard's record in ``output``, and the check of the others' against it."""

    output: Path
    shard: Shard
    inputs: ShardList

    @property
    def folder(self) -> Path:
        return self.output / SHARD_RECORDS

    def _record_path(self, index: int) -> Path:
        return self.folder / f"{index}-of-{self.shard.count}.json"

    def record(self) -> None:
        """Write this shard's record (and its list, unless a shard that cut the same one wrote it). Raises OSError."""
        self.folder.mkdir(exist_ok=True)
        digest = self.inputs.digest
        listed = self.folder / f"{digest}.json"
        if not listed.is_file():
            atomic_write_json(listed, self.inputs.names)
        atomic_write_json(self._record_path(self.shard.index), {
            "shard": self.shard.index, "shards": self.shard.count, "inputs": len(self.inputs.names), "list": digest,
        })

    def _recorded_list(self, index: int) -> list[str] | None:
        """The list shard ``index`` of the same N last ran over; None without a readable record (not run yet)."""
        try:
            record = json.loads(self._record_path(index).read_text(encoding="utf-8"))
            if record.get("list") == self.inputs.digest:
                return self.inputs.names
            names = json.loads((self.folder / f"{record['list']}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return names if isinstance(names, list) and all(isinstance(name, str) for name in names) else None

    def unaccounted(self) -> str | None:
        """One line naming the inputs of this shard's list that no shard takes by the records now there (the first of
        them, how many, the first shard whose list differs and where), with what to do; None when every input falls
        to some shard."""
        count, names = self.shard.count, self.inputs.names
        taken: set[str] = set(names[self.shard.index :: count])
        differing: list[tuple[int, list[str]]] = []
        for index in range(count):
            if index == self.shard.index:
                continue
            recorded = self._recorded_list(index)
            if recorded is None or recorded is names or recorded == names:
                taken.update(names[index::count])  # not run yet, or over the same list
                continue
            taken.update(recorded[index::count])
            differing.append((index, recorded))
        left = [shown for name, shown in zip(names, self.inputs.shown, strict=True) if name not in taken]
        if not left:
            return None
        index, recorded = differing[0]
        where = _first_difference(names, recorded, self.inputs.shown, self.output)
        return (f"shard {self.shard.index}/{count}: {len(left)} input(s) fall to no shard, {left[0]} first: shard "
                f"{index}/{count} ran over {len(recorded)} input(s) and this one finds {len(names)}{where} (inputs "
                "added or removed between the shards' starts, or other inputs given?); run every shard again once the "
                "inputs are final (--skip-existing keeps the finished work)")


def _first_difference(names: Sequence[str], recorded: Sequence[str], shown: Sequence[str], output: Path) -> str:
    """``", input 2 is b.mp4 here, c.mp4 there"``: where two lists first differ (nothing when one begins the other)."""
    for position, (here, there) in enumerate(zip(names, recorded, strict=False)):
        if here != there:
            return (f", input {position + 1} is {shown[position]} here, "
                    f"{os.path.normpath(os.path.join(output, there))} there")
    return ""
