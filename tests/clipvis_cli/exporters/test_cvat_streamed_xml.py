"""The CVAT exporters write their XML a frame (or track) at a time: the same bytes as indenting the whole tree."""

from __future__ import annotations

import copy
import io
import xml.etree.ElementTree as ET

import pytest

from clipvis.cli.exporters.cvat import _write_xml


def _child(number: int) -> ET.Element:
    image = ET.Element("image", {"id": str(number), "name": f"frame_{number:06d}.jpg"})
    for k in range(number % 3):
        mask = ET.SubElement(image, "mask", {"label": "cat", "rle": f"{k}, {number}"})
        ET.SubElement(mask, "attribute", {"name": "track_id"}).text = str(k)
    return image


@pytest.mark.parametrize("count", [0, 1, 2, 7])
def test_streamed_xml_is_the_indented_whole_tree(count: int) -> None:
    """A long video's CVAT XML held every frame's masks as one tree (6,000 frames at 96x64: 1.4 GB peak against
    0.74 at 600 frames); written child by child it is the same text, with no child too."""
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    meta = ET.SubElement(root, "meta")
    ET.SubElement(ET.SubElement(meta, "task"), "name").text = "clip"
    whole = copy.deepcopy(root)
    for number in range(count):
        whole.append(_child(number))
    ET.indent(whole, space="  ")
    streamed = io.BytesIO()
    _write_xml(streamed, root, (_child(number) for number in range(count)))
    assert streamed.getvalue() == ET.tostring(whole, encoding="utf-8")
    assert [child.tag for child in root] == ["version", "meta"]  # the root is left as it was given
