"""Read a YAML file keeping where every node starts, catch the YAML traps, validate
with a pydantic model, and report every problem as a :class:`ConfigIssue` with its line.

    doc = read_yaml(path, readme="station_profiles/README.md")
    station = validate(StationConfig, doc)        # raises ConfigError

The traps caught before validation: a file that is not UTF-8, a tab in the
indentation, a duplicate key (PyYAML silently keeps the last), and an unquoted
YAML 1.1 word ``yes``/``no``/``on``/``off`` (any case) that PyYAML reads as a
boolean where a person meant text (``parameter: NO``) or meant true/false.
Errors of the model (pydantic's, and the whole-document checks raising
:class:`SemanticErrors`) carry a path such as ``("devices", 0, "port")``, which
is walked through the node tree to find the line.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from configuration.errors import ConfigError, ConfigIssue, DocumentProblem, Loc, SemanticErrors, format_loc

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """libyaml's parser where PyYAML was built with it (its wheels are): the same nodes, marks and errors
    as the pure-Python SafeLoader, several times faster (a national registry of 2,000 stations with their
    metadata took 45 s with the pure-Python one). The tag resolver stays Python and runs its regular
    expressions once per scalar, so its answers are remembered: a registry repeats the same few words."""

    _resolved: dict = {}

    def resolve(self, kind, value, implicit):  # noqa: D102 - yaml.resolver.BaseResolver.resolve
        key = (kind, value, implicit)
        try:
            return self._resolved[key]
        except KeyError:
            tag = self._resolved[key] = super().resolve(kind, value, implicit)
            if len(self._resolved) > 100_000:  # bounded: unique values (keys, names) would grow it forever
                self._resolved.clear()
            return tag
        except TypeError:  # unhashable (a list of nodes for a sequence or mapping): not worth keeping
            return super().resolve(kind, value, implicit)


#: YAML 1.1 words PyYAML reads as booleans; true/false are the unambiguous spellings.
YES_NO_WORDS = frozenset({"yes", "no", "on", "off"})
_TAB_INDENT = re.compile(r"^ *\t", re.MULTILINE)


def display_path(path: Path) -> str:
    """The path as an operator typed it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class YamlDocument:
    """A parsed file: its plain data for pydantic and its node tree for lines."""

    path: Path
    shown: str
    readme: str
    data: Any
    root: Node | None
    tag_keys: tuple[str, ...] = ()  # discriminator keys: pydantic puts their values into error paths

    def locate(self, loc: Loc) -> tuple[int, Loc]:
        return _locate(self.root, loc, self.tag_keys)

    def line_of(self, loc: Loc) -> int:
        return self.locate(loc)[0]

    def issue(self, loc: Loc, message: str, fix: str) -> ConfigIssue:
        line, clean = self.locate(loc)
        return ConfigIssue(self.shown, line, format_loc(clean), message, fix)

    def issues(self, problems: list[DocumentProblem]) -> list[ConfigIssue]:
        return [self.issue(p.loc, p.message, p.fix) for p in problems]


# --------------------------------------------------------------------------- #
# Reading
# --------------------------------------------------------------------------- #


def read_yaml(path: Path | str, **rules: Any) -> YamlDocument:
    """Read and parse one file (``rules`` as for :func:`parse_yaml`); raises
    :class:`ConfigError` for unreadable files, bad syntax and the YAML traps."""
    path = Path(path)
    shown = display_path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(shown, 0, "", "file not found", "check the path")]) from None
    except OSError as exc:
        raise ConfigError([ConfigIssue(shown, 0, "", f"cannot read: {exc}", "check the file")]) from None
    return parse_yaml(raw, path, **rules)


def parse_yaml(
    raw: bytes,
    path: Path | str,
    *,
    readme: str,
    allow_empty: bool = False,
    allowed_words: frozenset[str] = frozenset(),
    tag_keys: tuple[str, ...] = (),
) -> YamlDocument:
    """Parse bytes read from ``path`` (which names them in errors). ``readme`` is
    where the layout is explained; ``allowed_words`` are yes/no words the format
    means as booleans (the QC thresholds' ``off``); an empty document is an error
    unless ``allow_empty`` (then ``data`` is None); ``tag_keys`` name the
    discriminator keys of tagged unions (their values appear in pydantic's paths)."""
    path = Path(path)
    shown = display_path(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            [
                ConfigIssue(
                    shown,
                    line,
                    "",
                    f"not UTF-8: byte 0x{raw[exc.start]:02x} cannot be decoded",
                    "save the file as UTF-8 (Vietnamese names included)",
                )
            ]
        ) from None
    tabs = [text.count("\n", 0, m.start()) + 1 for m in _TAB_INDENT.finditer(text)]
    if tabs:
        raise ConfigError(
            [
                ConfigIssue(
                    shown, line, "", "a tab in the indentation (YAML allows only spaces there)", "indent with spaces"
                )
                for line in tabs
            ]
        )
    try:
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        fix = "fix the YAML syntax (indentation, quotes, a missing ':')"
        if "sequence entries are not allowed" in problem:
            fix = 'a bare "-" starts a list item; put a value such as unit: "-" in quotes, or fix the indentation'
        raise ConfigError([ConfigIssue(shown, line, "", f"not valid YAML: {problem}", fix)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(shown, 0, "", f"not valid YAML: {exc}", "fix the YAML syntax")]) from None
    if root is None or data is None:
        if allow_empty:
            return YamlDocument(path, shown, readme, None, None, tag_keys)
        raise ConfigError([ConfigIssue(shown, 1, "", "the file is empty", f"see {readme} for the layout")])
    traps = list(_traps(root, (), allowed_words))
    if traps:
        raise ConfigError(
            [ConfigIssue(shown, line, format_loc(loc), message, fix) for loc, line, message, fix in traps]
        )
    return YamlDocument(path, shown, readme, data, root, tag_keys)


_constructor = yaml.constructor.SafeConstructor()


def _scalar_key(node: Node) -> Any:
    """A mapping key node -> the Python value SafeLoader gives it (NO -> False, 1 -> 1)."""
    if not isinstance(node, ScalarNode):
        return None
    try:
        return _constructor.construct_object(node)
    except Exception:  # noqa: BLE001 - an odd key (a bad timestamp...): compare by its text
        return node.value


def _yes_no_word(node: Node) -> bool | None:
    """The boolean an unquoted yes/no/on/off scalar is read as, else None."""
    if (
        isinstance(node, ScalarNode)
        and not node.style  # plain: None from the Python parser, "" from libyaml
        and node.tag == "tag:yaml.org,2002:bool"
        and node.value.lower() in YES_NO_WORDS
    ):
        return node.value.lower() in ("yes", "on")
    return None


def _traps(node: Node, loc: Loc, allowed_words: frozenset[str]) -> Iterator[tuple[Loc, int, str, str]]:
    """(loc, line, message, fix) of every duplicate key and yes/no word under ``node``."""
    if isinstance(node, MappingNode):
        seen: set[Any] = set()
        for k, v in node.value:
            key = _scalar_key(k)
            line = k.start_mark.line + 1
            word = _yes_no_word(k)
            if word is not None:
                yield (
                    loc,
                    line,
                    f"YAML reads the unquoted key {k.value!r} as the boolean {word}",
                    f'put it in quotes: "{k.value}":',
                )
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # a list or mapping as a key: nothing to compare
                duplicate = False
            if duplicate:
                yield loc, line, f"duplicate key {key!r} (YAML would silently keep the last one)", "remove one of them"
            yield from _traps(v, loc + (key,) if isinstance(key, (str, int)) else loc, allowed_words)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            yield from _traps(item, loc + (i,), allowed_words)
    else:
        word = _yes_no_word(node)
        if word is not None and node.value.lower() not in allowed_words:
            last = loc[-1] if loc and isinstance(loc[-1], str) else None
            quoted = f'put it in quotes, e.g. {last}: "{node.value}"' if last else f'put it in quotes: "{node.value}"'
            yield (
                loc,
                node.start_mark.line + 1,
                f"YAML reads the unquoted word {node.value!r} as the boolean {word}",
                f"{quoted}; for a yes/no setting write {str(word).lower()}",
            )


def _locate(node: Node | None, loc: Loc, tag_keys: tuple[str, ...] = ()) -> tuple[int, Loc]:
    """Walk ``loc`` through the node tree -> (line of the deepest node found, loc
    without pydantic's union tags and member names)."""
    if node is None:
        return 0, loc
    line = node.start_mark.line + 1
    clean: list[str | int] = []
    cur: Node | None = node
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        if part == "[key]":
            break
        if isinstance(cur, MappingNode):
            hit = None
            for k, v in cur.value:
                key = _scalar_key(k)
                if key == part or (not isinstance(key, bool) and str(key) == str(part)):
                    hit = (k, v)
                    break
            if hit is None:
                tags = {
                    str(_scalar_key(v))
                    for k, v in cur.value
                    if _scalar_key(k) in tag_keys and isinstance(v, ScalarNode)
                }
                if isinstance(part, str) and part in tags:
                    continue  # pydantic's discriminated-union tag, not a key
                clean.append(part)  # a missing key: point at the mapping
                clean.extend(p for p in parts if p != "[key]" and not _is_member_name(p))
                break
            clean.append(part)
            line = hit[0].start_mark.line + 1
            cur = hit[1]
        elif isinstance(cur, SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(cur.value):
                clean.append(part)
                break
            clean.append(part)
            cur = cur.value[part]
            line = cur.start_mark.line + 1
        else:
            break  # a scalar: the rest are pydantic member names ("int", "str", ...)
    return line, tuple(clean)


def _is_member_name(part: str | int) -> bool:
    return isinstance(part, str) and (
        part in {"int", "str", "float", "bool", "none", "list", "tuple", "dict"} or "[" in part
    )


# --------------------------------------------------------------------------- #
# Validation and error translation
# --------------------------------------------------------------------------- #

M = typing.TypeVar("M", bound=BaseModel)

#: A format's own wording for some pydantic errors: (error, model, loc, data, readme) -> (message, fix) or None.
Explainer = Callable[[dict[str, Any], type[BaseModel], Loc, Any, str], "tuple[str, str] | None"]


def validate(cls: type[M], doc: YamlDocument, *, explain: Explainer | None = None, data: Any = None) -> M:
    """``cls.model_validate`` of the document (or of ``data`` taken from it); raises
    :class:`ConfigError` with one issue per problem, each at its line."""
    data = doc.data if data is None else data
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_issues(exc, cls, doc, explain=explain, data=data)) from None
    except SemanticErrors as exc:
        raise ConfigError(doc.issues(exc.issues)) from None


def validation_issues(
    exc: ValidationError, cls: type[BaseModel], doc: YamlDocument, *, explain: Explainer | None = None, data: Any = None
) -> list[ConfigIssue]:
    data = doc.data if data is None else data
    issues: list[ConfigIssue] = []
    seen: set[tuple[int, str]] = set()
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if err["type"] == "union_tag_invalid":
            loc += (str((err.get("ctx") or {}).get("discriminator", "")).strip("'"),)
        line, clean = doc.locate(loc)
        message, fix = (explain and explain(err, cls, clean, data, doc.readme)) or explain_error(
            err, cls, clean, data, doc.readme
        )
        key = (line, format_loc(clean))
        if key in seen:  # one problem reported once (unions give one error per member)
            continue
        seen.add(key)
        issues.append(ConfigIssue(doc.shown, line, format_loc(clean), message, fix))
    return issues


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(ctx: dict[str, Any]) -> str:
    return str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")


def _looks_numeric(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def explain_error(err: dict[str, Any], root: type[BaseModel], loc: Loc, data: Any, readme: str) -> tuple[str, str]:
    """A pydantic error -> (message, fix) an operator can act on."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    last = loc[-1] if loc else ""
    if kind == "config":  # configuration.errors.config_error: the validator wrote both
        return str(ctx["message"]), str(ctx["fix"])
    if kind == "literal_error":
        options = _expected(ctx)
        close = difflib.get_close_matches(str(value), options.split(", "), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"{short(value)} is not one of {options}", f"{hint}use one of {options}"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(root, loc[:-1], data)
        close = difflib.get_close_matches(str(last), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else "remove it; "
        return f"unknown key {last!r}", f"{hint}allowed keys here: {', '.join(allowed)}"
    if kind == "missing":
        return f"required key {last!r} is missing", f"add `{last}: ...` (see {readme})"
    if kind == "union_tag_invalid":
        tags = _expected({"expected": ctx.get("expected_tags", "")})
        close = difflib.get_close_matches(str(ctx.get("tag")), tags.split(", "), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return (
            f"{str(ctx.get('discriminator', '')).strip(chr(39))} {ctx.get('tag')!r} is not supported",
            f"{hint}use one of {tags}",
        )
    if kind == "string_type" and isinstance(value, bool):
        return f"YAML read an unquoted word as the boolean {value}", f'put it in quotes, e.g. {last}: "..."'
    if kind == "string_type" and value is None:
        return "the value is empty", f'write a value in quotes, e.g. {last}: "-" (a bare - starts a YAML list)'
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected a whole number, got {short(value)}", "write an integer without quotes or decimals"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"expected a number, got {short(value)}", "write the number without quotes" if isinstance(
            value, str
        ) and _looks_numeric(value) else "write a plain number, e.g. 1.0"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {short(value)}", "write true or false"
    if kind == "string_type":
        return f"expected text, got {short(value)}", "put the value in quotes"
    if kind == "string_pattern_mismatch":
        return (
            f"{short(value)} is not a valid name",
            "use 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit",
        )
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value lines), got {short(value)}", f"see {readme} for the layout"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {short(value)}", "write [a, b] or one '- item' line per entry"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length', 1)} entries", f"add entries (see {readme})"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{short(value)}: {err['msg'][0].lower()}{err['msg'][1:]}", "change the value"
    return f"{short(value)}: {err['msg']}", f"see {readme}"


def _unwrap(tp: Any) -> list[Any]:
    """Annotated/Optional/Union -> the candidate types."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(tp):
            if arg is not type(None):
                out.extend(_unwrap(arg))
        return out
    return [tp]


def _fits_tags(model: type[BaseModel], data: dict) -> bool:
    """Whether ``data`` carries the Literal values (discriminator tags) the model declares."""
    for name, f in model.model_fields.items():
        args = [
            a for tp in _unwrap(f.annotation) if typing.get_origin(tp) is typing.Literal for a in typing.get_args(tp)
        ]
        if args and name in data and data[name] not in args:
            return False
    return True


def _allowed_keys(root: type[BaseModel], loc: Loc, data: Any) -> list[str]:
    """Field names of the model that sits at ``loc`` (best effort)."""
    candidates: list[Any] = [root]
    cur_data = data
    for part in loc:
        nxt: list[Any] = []
        for tp in candidates:
            origin = typing.get_origin(tp)
            if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str) and part in tp.model_fields:
                nxt.extend(_unwrap(tp.model_fields[part].annotation))
            elif origin in (list, tuple) and isinstance(part, int):
                nxt.extend(_unwrap(typing.get_args(tp)[0]))
            elif origin is dict:
                nxt.extend(_unwrap(typing.get_args(tp)[1]))
        try:
            cur_data = cur_data[part]
        except (KeyError, IndexError, TypeError):
            cur_data = None
        candidates = nxt
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    if len(models) > 1 and isinstance(cur_data, dict):  # a discriminated union: pick by its tag
        models = [m for m in models if _fits_tags(m, cur_data)] or models
    return sorted(models[0].model_fields) if models else []
