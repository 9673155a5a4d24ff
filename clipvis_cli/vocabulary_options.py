"""The class names a run is given: ``--vocab "a,b"`` or ``--vocab-file`` (one class a line), checked as the
predictor takes them (`clipvis.model.vocabulary`: the rules of class names), with errors naming the file and line."""

from __future__ import annotations

import codecs
from pathlib import Path

import typer

from clipvis.cli.messages import describe_exception, unwritable_character
from clipvis.model.vocabulary import name_key, repeated_class_names, shared_names, strip_name


def parse_vocabulary(vocab: str | None, vocab_file: Path | None) -> list[str]:
    """Class strings for the model: `--vocab "a,b"` or one class per line of a UTF-8 file (a line may list
    comma-separated synonyms, the first being the class name; blank lines and lines starting with `#` are skipped).
    Names lose the whitespace and invisible format characters at their ends, as the predictor takes them
    (`clipvis.model.vocabulary`: the rules of class names). Raises typer.BadParameter naming the file and, for a file,
    the line."""
    if (vocab is None) == (vocab_file is None):
        raise typer.BadParameter("give exactly one of --vocab or --vocab-file")
    if vocab is not None:
        source = "--vocab"
        if vocab.startswith("--"):  # `--vocab --overwrite`: the next option taken as the class names
            raise typer.BadParameter(f"{source} is missing its class names (it took the option "
                                     f"{vocab.split(',')[0]!r} as them): --vocab \"cat,dog\"")
        entries: list[tuple[int | None, list[str]]] = [(None, [strip_name(name)]) for name in vocab.split(",")]
        if not all(parts[0] for _, parts in entries):
            raise typer.BadParameter(f"{source}: empty class name (classes are separated by commas)")
    else:
        source = str(vocab_file)
        entries = list(_vocabulary_file_lines(vocab_file))
        if not entries:
            raise typer.BadParameter(f"{source}: no class names (one a line; lines starting with # are comments)")

    def where(line: int | None) -> str:
        return source if line is None else f"{source}, line {line}"

    for line, parts in entries:
        if not all(parts):
            raise typer.BadParameter(f"{where(line)}: empty synonym in {', '.join(parts)!r} (synonyms are separated "
                                     "by commas)")
    names = [", ".join(parts) for _, parts in entries]
    for (line, _), name in zip(entries, names, strict=True):  # ESC or NUL: CVAT's and Label Studio's XML refuse them
        if (problem := unwritable_character(name)) is not None:
            raise typer.BadParameter(f"{where(line)}: the class name {name!r} holds {problem}")
    # "café" typed two ways, "Car" and "car"; a synonym another class lists too (`cat, dog` and `dog`)
    classes = [parts for _, parts in entries]
    shared = shared_names(classes)
    # a class name repeated is said as such; else a synonym in more than one class
    duplicates = repeated_class_names(shared, classes) or shared
    if duplicates:
        shown = "; ".join(repr(name_key(name)) if vocab_file is None else
                          f"{name_key(name)!r} (lines {', '.join(str(entries[i][0]) for i in classes)})"
                          for name, classes in duplicates[:5])
        what = "duplicate class names" if duplicates is not shared else "class names or synonyms in more than one class"
        raise typer.BadParameter(f"{source}: {what} (case aside): {shown}")
    return names


def _vocabulary_file_lines(path: Path) -> list[tuple[int, list[str]]]:
    """``(line number, synonyms)`` of each class line of a vocabulary file (blank and `#` lines skipped)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise typer.BadParameter(f"{path}: cannot read ({describe_exception(error)})") from error
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(data) > 1 and b"\x00" in data[:2]):
        raise typer.BadParameter(f"{path}: the file is UTF-16 or UTF-32 text: save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        at = error.start + (len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0)  # the BOM is skipped
        line = data[:at].replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1  # as lines are split
        raise typer.BadParameter(f"{path}, line {line}: not UTF-8 text (byte {data[at]:#04x}): save the file "
                                 "as UTF-8") from None
    # one class a line, lines ended by \n, \r\n or \r only: str.splitlines() also split on VT, FF, U+2028...,
    # making two classes of a line that --vocab refuses
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [(number, [strip_name(part) for part in line.split(",")])
            for number, line in enumerate(lines, start=1)
            if (cleaned := strip_name(line)) and not cleaned.startswith("#")]
