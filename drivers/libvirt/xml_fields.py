"""Reading libvirt's XML: the elements and attributes it must have, or a ValueError naming what is missing."""

from __future__ import annotations

import xml.etree.ElementTree as ET


def required_child(element: ET.Element, path: str) -> ET.Element:
    """The element at ``path``; XML without it is not what libvirt (or cwhost) wrote."""
    found = element.find(path)
    if found is None:
        raise ValueError(f"domain XML has no {path} under <{element.tag}>")
    return found


def required_attribute(element: ET.Element, name: str) -> str:
    value = element.get(name)
    if value is None:
        raise ValueError(f"domain XML's <{element.tag}> has no {name}")
    return value


def required_text(element: ET.Element, path: str) -> str:
    return required_child(element, path).text or ""
