"""Parameter mappings: a station's own names for the regulation's symbols (``PM25`` -> ``PM2,5``).

A name without a mapping is kept exactly as the station sent it; a mapping is
configured per station or per province, as a dict or a YAML file of
``source: target`` lines (``parameter_map.sample.yaml`` beside this module).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from vocabulary.parameters import PARAMETER_RE

PARAMETER_PATTERN = re.compile(PARAMETER_RE)


class MappingError(ValueError):
    """A wrong mapping entry: names the file, the line and the fix."""


def check_mapping(mapping: Mapping[str, str], where: str = "parameter mapping") -> dict[str, str]:
    """Validate a mapping given as a dict; every target must be a name the system can carry."""
    checked: dict[str, str] = {}
    for source, target in mapping.items():
        _check_entry(source, target, where)
        checked[source] = target
    return checked


def _check_entry(source: object, target: object, where: str) -> None:
    if not isinstance(source, str) or not source.strip() or any(c in source for c in "\t\r\n"):
        raise MappingError(f"{where}: the name {source!r} to map must be non-empty text without TAB or line breaks")
    if source != source.strip():
        raise MappingError(
            f"{where}: {source!r} has spaces around it; fields are read without them, so write {source.strip()!r}"
        )
    if not isinstance(target, str) or not PARAMETER_PATTERN.match(target):
        raise MappingError(
            f"{where}: {source!r} maps to {target!r}; a parameter is one word of 1 to 64 characters without spaces, "
            "e.g. 'PM2,5' (quote it in YAML)"
        )


def load_mapping(path: Path) -> dict[str, str]:
    """Read a YAML mapping file; a wrong line fails here with the file, the line and the fix."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"{path}: cannot read the parameter mapping ({exc})") from exc
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML ({exc})") from exc
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise MappingError(
            f"{path}, line {root.start_mark.line + 1}: expected 'name as sent: symbol' lines, e.g. PM25: 'PM2,5'"
        )
    mapping: dict[str, str] = {}
    for key_node, value_node in root.value:
        where = f"{path}, line {key_node.start_mark.line + 1}"
        if not isinstance(key_node, yaml.ScalarNode) or not isinstance(value_node, yaml.ScalarNode):
            raise MappingError(f"{where}: each line must be 'name as sent: symbol', e.g. PM25: 'PM2,5'")
        # Both sides are names, never numbers or booleans: keep YAML from reading 'NO' as false.
        source, target = key_node.value, value_node.value
        if source in mapping:
            raise MappingError(f"{where}: {source!r} is mapped twice")
        _check_entry(source, target, where)
        mapping[source] = target
    return mapping
