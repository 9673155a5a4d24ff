"""A rich table of video AP results (percentages), optionally next to the paper's published numbers."""

from __future__ import annotations

from collections.abc import Mapping

from rich.table import Table

from clipvis.cli.evaluation.video_ap import STAT_NAMES, VideoAPResult

_MISSING = "-"


def format_percent(value: float | None) -> str:
    """A fraction as a percentage with two decimals; '-' for undefined (the reference's -1)."""
    return _MISSING if value is None else f"{100.0 * value:.2f}"


def metrics_table(
    result: VideoAPResult,
    published: Mapping[str, float] | None = None,
    title: str | None = None,
    published_label: str = "paper",
) -> Table:
    """Rows = the 12 summary stats, columns = all categories then each block (base, novel, ...).

    `published` maps stat names as the reference prints them (``AP``, ``AP50``, ``APn``, ``APb`` ...) to published
    values **in percent**; a "paper" column is added right after each column that has at least one of them.
    """
    published = dict(published or {})
    columns: list[tuple[str, str, dict[str, float | None]]] = [("all", "", dict(result.stats))]
    columns += [(block.name, block.suffix, dict(block.stats)) for block in result.blocks]
    table = Table(title=title, title_justify="left")
    table.add_column("metric", style="bold")
    layout: list[tuple[str, str, dict[str, float | None], bool]] = []
    for name, suffix, stats in columns:
        with_paper = any(f"{stat}{suffix}" in published for stat in STAT_NAMES)
        table.add_column(name, justify="right")
        if with_paper:
            table.add_column(f"{published_label} ({name})" if suffix else published_label, justify="right")
        layout.append((name, suffix, stats, with_paper))
    for stat in STAT_NAMES:
        row = [stat]
        for _, suffix, stats, with_paper in layout:
            row.append(format_percent(stats.get(stat)))
            if with_paper:
                value = published.get(f"{stat}{suffix}")
                row.append(_MISSING if value is None else f"{value:.1f}")
        table.add_row(*row)
    return table
