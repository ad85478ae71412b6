"""Each top-level package imports only what its README's "May import:" line allows.

The line is one line of the package's README.md:

    May import: stdlib, `vocabulary`, `supervisor`, msgpack, nacl (PyNaCl), paho (paho-mqtt).

Items are comma-separated import names (what follows ``import``: ``nacl``, not
``PyNaCl``), optionally in backticks, each optionally followed by a note in
parentheses; a final full stop is allowed, nothing else. ``stdlib`` is the
Python standard library, ``quantrac`` every quantrac package. A package may
always import itself. Every import counts: module-level, inside functions and
under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RULE_PREFIX = "May import:"
NOTE = re.compile(r"\([^()]*\)")
IMPORT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def quantrac_packages() -> list[str]:
    return sorted(p.parent.name for p in REPO.glob("*/__init__.py"))


class RuleError(ValueError):
    """A README's "May import:" line that cannot be read."""


def parse_rule(line: str) -> frozenset[str]:
    """The import names a "May import:" line allows (``quantrac`` expanded). Raises RuleError."""
    if not line.startswith(RULE_PREFIX):
        raise RuleError(f"not a rule line: {line!r}")
    body = NOTE.sub("", line[len(RULE_PREFIX) :]).strip().removesuffix(".")
    names: set[str] = set()
    for item in body.split(","):
        name = item.strip().strip("`")
        if not IMPORT_NAME.fullmatch(name):
            raise RuleError(f"{name!r} is not an import name (write prose on another line): {line!r}")
        names.update(quantrac_packages() if name == "quantrac" else [name])
    return frozenset(names)


def readme_rule(package: str) -> tuple[str, frozenset[str]]:
    readme = REPO / package / "README.md"
    assert readme.is_file(), f"{package}/ has no README.md (it must say what the package owns and may import)"
    lines = [(n, line) for n, line in enumerate(readme.read_text().splitlines(), 1) if line.startswith(RULE_PREFIX)]
    assert len(lines) == 1, f"{package}/README.md needs exactly one line starting {RULE_PREFIX!r}, has {len(lines)}"
    number, line = lines[0]
    try:
        return f"{package}/README.md:{number}", parse_rule(line)
    except RuleError as exc:
        raise AssertionError(f"{package}/README.md:{number}: {exc}") from None


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str  # top-level name; "" for a relative import

    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def ruled_subfolders(package: str) -> list[str]:
    """Sub-folders at any depth (``package/sub``, ``package/sub/sub``) whose own README.md has a rule:
    they answer to it, not to the folder above."""
    return sorted(
        str(readme.parent.relative_to(REPO))
        for readme in (REPO / package).glob("*/**/README.md")
        if (readme.parent / "__init__.py").is_file()
        and any(line.startswith(RULE_PREFIX) for line in readme.read_text().splitlines())
    )


def imports_of(package: str) -> list[Import]:
    found = []
    own = [REPO / sub for sub in ruled_subfolders(package)]
    for path in sorted((REPO / package).rglob("*.py")):
        if any(path.is_relative_to(sub) for sub in own):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [Import(path, node.lineno, alias.name.partition(".")[0]) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                top = "" if node.level else (node.module or "").partition(".")[0]
                found.append(Import(path, node.lineno, top))
    return found


def violations(package: str, allowed: frozenset[str]) -> list[str]:
    bad = []
    itself = package.partition("/")[0]  # a sub-folder is part of its package
    for imp in imports_of(package):
        if imp.module in ("", itself) or imp.module in allowed:
            continue
        if "stdlib" in allowed and imp.module in sys.stdlib_module_names:
            continue
        bad.append(f"{imp.where()}: imports {imp.module}")
    return bad


@pytest.mark.parametrize("package", quantrac_packages() + [s for p in quantrac_packages() for s in ruled_subfolders(p)])
def test_package_imports_only_what_its_readme_allows(package: str) -> None:
    where, allowed = readme_rule(package)
    bad = violations(package, allowed)
    assert not bad, f"{len(bad)} import(s) outside the rule in {where}:\n" + "\n".join(bad)


def test_every_directory_with_python_code_is_checked() -> None:
    """A new top-level folder of modules must be a package with a README rule, or be bench/ or scripts/."""
    with_code = {p.relative_to(REPO).parts[0] for p in REPO.glob("*/*.py")}
    assert with_code - set(quantrac_packages()) == {"bench", "scripts"}


def test_the_rule_parser_reads_notes_and_refuses_prose() -> None:
    rule = parse_rule("May import: stdlib, `supervisor`, nacl (PyNaCl, libsodium), paho (paho-mqtt).")
    assert rule == {"stdlib", "supervisor", "nacl", "paho"}
    assert "store" in parse_rule("May import: quantrac")
    with pytest.raises(RuleError, match="not an import name"):
        parse_rule("May import: the standard library and msgpack")


def test_a_forbidden_import_is_reported_with_its_file_and_line() -> None:
    bad = violations("store", frozenset({"stdlib"}))
    assert any(re.fullmatch(r"store/\S+\.py:\d+: imports psycopg", v) for v in bad), bad
