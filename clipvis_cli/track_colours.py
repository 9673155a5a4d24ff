"""Each track's colour, the same in the overlay (clipvis.cli.writers.overlay) and in the export formats that colour
tracks (clipvis.cli.exporters: CVAT labels, id maps): a leaf module both import."""

from __future__ import annotations

# 64 saturated colours, no greys, each as far (CIE Lab) from the ones before it as the candidates allow: farthest-point
# sampling over 48 hues x saturation (0.55, 0.75, 0.95) x value (0.65, 0.82, 1.0), from pure red. Any two differ by
# ΔE76 >= 19, any two of the first 20 by >= 36 (the 20-colour table before gave 17.7, and repeated every 20 tracks).
# Written out rather than computed, so every machine gets the same bytes.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 13, 13), (13, 13, 255), (13, 255, 13), (64, 207, 255), (255, 220, 115), (255, 115, 220),
    (8, 166, 87), (166, 86, 75), (8, 67, 166), (225, 255, 13), (225, 13, 255), (255, 13, 104),
    (64, 255, 231), (255, 134, 13), (150, 255, 115), (126, 8, 166), (135, 166, 41), (64, 88, 255),
    (166, 41, 104), (64, 159, 255), (75, 166, 154), (166, 8, 8), (166, 119, 41), (41, 119, 166),
    (13, 255, 164), (185, 115, 255), (255, 150, 115), (255, 115, 150), (154, 75, 166), (8, 166, 8),
    (255, 194, 13), (255, 13, 164), (237, 255, 115), (209, 10, 184), (8, 8, 166), (115, 132, 255),
    (13, 255, 104), (255, 88, 64), (135, 209, 10), (159, 64, 255), (166, 146, 8), (209, 52, 72),
    (209, 209, 10), (94, 209, 152), (255, 185, 115), (75, 97, 166), (209, 135, 10), (209, 85, 10),
    (164, 255, 13), (10, 209, 10), (137, 209, 94), (166, 154, 75), (209, 94, 166), (10, 209, 209),
    (8, 146, 166), (52, 209, 91), (209, 10, 110), (10, 10, 209), (73, 41, 166), (255, 115, 115),
    (166, 88, 41), (166, 8, 126), (184, 10, 209), (166, 8, 67),
)


def track_colour(track_id: int) -> tuple[int, int, int]:
    """The RGB colour of a track (same id, same colour, in every frame and every run): tracks 1 to 64 all differ."""
    return PALETTE[(track_id - 1) % len(PALETTE)]


def hex_colour(track_id: int) -> str:
    """``track_colour(track_id)`` as ``#rrggbb`` (CVAT label colours, Label Studio label backgrounds): a label's colour
    is the one the overlay gives the track of the same (1-based) id."""
    red, green, blue = track_colour(track_id)
    return f"#{red:02x}{green:02x}{blue:02x}"
