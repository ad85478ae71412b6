"""The errors every configuration file reports: FILE:LINE: path: message (fix: ...)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic_core import PydanticCustomError

#: A path into a document: mapping keys and list indexes, e.g. ("devices", 0, "port").
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem of a configuration file, placed at its line."""

    file: str
    line: int
    path: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        path = f" {self.path}:" if self.path else ""
        return f"{where}:{path} {self.message} (fix: {self.fix})"


class ConfigError(ValueError):
    """A configuration file is invalid. ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass(frozen=True)
class DocumentProblem:
    """A problem found by a whole-document check: a path into the document, not yet a line."""

    loc: Loc
    message: str
    fix: str


class SemanticErrors(Exception):
    """Whole-document checks failed (raised by model validators).

    Not a ValueError on purpose: pydantic lets it through unwrapped, with the
    exact path of each problem, and the loader turns the paths into lines.
    """

    def __init__(self, problems: list[DocumentProblem]) -> None:
        self.issues = problems
        super().__init__("; ".join(f"{format_loc(p.loc)}: {p.message} (fix: {p.fix})" for p in problems))


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(document)"


def config_error(message: str, fix: str) -> PydanticCustomError:
    """For a field validator: a pydantic error that the loader reports with this message and fix."""
    return PydanticCustomError("config", "{message}", {"message": message, "fix": fix})
