"""Checking a config: every setting's type, range and choices, and the rules between settings.

pydantic validates the dataclasses of qcxr.config, whose field types carry the rules (`Rule`,
`Literal`); this module turns pydantic's errors into one line per problem naming the dotted
key, the value given and what is allowed. qcxr.config imports it only when a config is built
or a YAML file read (`read_yaml`: PyYAML errors and keys given twice, as one line with line and
column), so that importing the config stays light.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from qcxr.config import Config, Rule, task_of

# Rules between settings, checked once each of their settings is valid alone (with the task
# check: a built-in label set's name, or a name given with an explicit `labels` list).
AT_MOST = (  # (setting, the setting it may not exceed)
    ("data.crop", "data.resize_shortest"),
    ("eval.tail_max_count", "eval.head_min_count"),
)
DISTINCT = ("train.seeds",)  # lists without a repeated value


def _relation_problems(config: Config, bad: set[str]) -> list[str]:
    """The problems between settings of `config`, but those that involve a setting in `bad`."""

    def get(key: str) -> Any:
        return functools.reduce(getattr, key.split("."), config)

    found = []
    if not bad & {"task", "labels"}:
        try:
            task_of(config)
        except ValueError as err:  # qcxr.labels' messages name the task or not
            found.append(str(err) if str(err).startswith("task ") else f"task: {err}")
    for key, limit in AT_MOST:
        if not bad & {key, limit} and get(key) > get(limit):
            found.append(f"{key}: {get(key)!r} must be <= {limit} ({get(limit)!r})")
    for key in DISTINCT:
        if key not in bad and len(set(get(key))) < len(get(key)):
            found.append(f"{key}: {list(get(key))!r} repeats a value")
    data = config.data
    contradicts = data.format == "mimic-cxr-lt" and data.source == "nih"
    if not bad & {"data.format", "data.source"} and contradicts:
        found.append("data.source: 'nih' contradicts data.format 'mimic-cxr-lt' (use mimic)")
    fractions = data.split_fractions
    if "data.split_fractions" not in bad and abs(sum(fractions) - 1) > 1e-6:
        found.append(
            f"data.split_fractions: {list(fractions)!r} must add up to 1 (train, val, test)"
        )
    if "data.split_fractions" not in bad and min(fractions) <= 0:
        found.append(f"data.split_fractions: {list(fractions)!r}: each split needs a share > 0")
    return found


@functools.cache
def _adapter() -> Any:
    from pydantic import TypeAdapter  # here: importing this module stays light

    return TypeAdapter(Config)


def checked(data: dict[str, Any]) -> tuple[Config | None, list[str]]:
    """The config of nested mappings `data` and its problems (then the config is None)."""
    from pydantic import ValidationError

    try:
        config = _adapter().validate_python(data)
    except ValidationError as err:
        found: dict[str, tuple[tuple[str, ...], str]] = {}
        for error in err.errors():
            path, key, text = _problem(error, data)
            found.setdefault(key, (path, text))
        problems = [text for _, text in found.values()]
        bad = {".".join(path) for path, _ in found.values()}
        # Rules between settings on the config with the bad settings at their defaults.
        partial = _without(data, [path for path, _ in found.values()])
        try:
            config = _adapter().validate_python(partial)
        except ValidationError:
            return None, problems
        return None, problems + _relation_problems(config, bad)
    problems = _relation_problems(config, set())
    if problems:
        return None, problems
    # "CXR14" and "cxr14" are one task: one run directory, one name in every record.
    return dataclasses.replace(config, task=task_of(config).name), []


def _without(data: dict[str, Any], paths: list[tuple[str, ...]]) -> dict[str, Any]:
    """`data` less the settings at `paths` (so that they take their defaults)."""
    out = dict(data)
    for path in paths:
        node = out
        for part in path[:-1]:
            node[part] = node = dict(node[part])
        node.pop(path[-1], None)
    return out


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _problem(error: Mapping[str, Any], data: Mapping[str, Any]) -> tuple[tuple[str, ...], str, str]:
    """(the setting's path, the dotted key named, the problem) of one pydantic error."""
    loc, cls, path = tuple(error["loc"]), Config, ()
    node: Any = data
    for i, part in enumerate(loc):
        hints = _hints(cls)
        if part not in hints:  # a key that is not a setting
            key = ".".join((*path, str(part)))
            return (*path, str(part)), key, f"{key}: unknown setting; {_known(path, str(part))}"
        path, node, kind = (*path, part), node[part], hints[part]
        if not dataclasses.is_dataclass(kind):
            rest = loc[i + 1 :]
            key = ".".join(path)
            if rest and isinstance(rest[0], int) and error["type"] != "missing":
                index = rest[0]  # one item of a list
                item = typing.get_args(_base(kind))
                item = item[0] if item[-1] is Ellipsis else item[index]
                return (
                    path,
                    f"{key}[{index}]",
                    f"{key}[{index}]: {error['input']!r} is not {_allowed(item)}",
                )
            value = node if rest else error["input"]  # a number read from a string: the number
            text = _allowed(kind)
            if error["type"] == "finite_number":
                text = text.replace("a number", "a finite number")
            return path, key, f"{key}: {_shown(value)} is not {text}"
        cls = kind
    key = ".".join(path)  # a section that is not a mapping
    names = ", ".join(f.name for f in dataclasses.fields(cls))
    return path, key, f"{key}: {node!r} is not a mapping of {key} settings ({names})"


def _shown(value: Any) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def _known(section: tuple[str, ...], name: str) -> str:
    cls: Any = Config
    for part in section:
        cls = _hints(cls)[part]
    names = [f.name for f in dataclasses.fields(cls)]
    where = ".".join(section) or "the top level"
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f"did you mean {'.'.join((*section, close[0]))}?"
    return f"{where} has {', '.join(names)}"


def _base(kind: Any) -> Any:
    """`kind` without its Annotated rules."""
    return typing.get_args(kind)[0] if typing.get_origin(kind) is Annotated else kind


def _rule(kind: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if typing.get_origin(kind) is Annotated:
        for meta in kind.__metadata__:
            if isinstance(meta, Rule):
                found.update(meta.constraints())
    return found


_NOUNS = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    bool: ("true or false", "true or false"),
}


def _allowed(kind: Any, plural: bool = False) -> str:
    """What a setting of type `kind` accepts, in words: "an integer >= 1", "one of cdl, dqc"."""
    base, rule = _base(kind), _rule(kind)
    if typing.get_origin(base) is Literal:
        return f"one of {', '.join(map(str, typing.get_args(base)))}"
    if typing.get_origin(base) in (typing.Union, types.UnionType):
        choices = []
        for option in typing.get_args(base):
            option = _base(option)
            if option is str:
                choices.append("a string")
            elif typing.get_origin(option) is dict:
                keys = typing.get_args(typing.get_args(option)[0])
                choices.append(f"a mapping of {'/'.join(keys)} to strings")
            else:
                choices += typing.get_args(option) if option is not bool else ["true", "false"]
        return f"one of {', '.join(map(str, dict.fromkeys(choices)))}"
    if typing.get_origin(base) is tuple:
        items = typing.get_args(base)
        if items[-1] is Ellipsis:
            least = rule.get("min_length", 0)
            what = "a non-empty list" if least == 1 else "a list"
            return f"{what} of {_allowed(items[0], plural=True)}"
        return f"a list of {len(items)} {_allowed(items[0], plural=True)}"
    noun = _NOUNS[base][plural]
    return f"{noun}{_bounds(rule)}"


def _bounds(rule: Mapping[str, Any]) -> str:
    def num(v: float) -> str:
        return f"{v:g}"

    low = ("[", rule["ge"]) if "ge" in rule else ("(", rule["gt"]) if "gt" in rule else None
    high = ("]", rule["le"]) if "le" in rule else (")", rule["lt"]) if "lt" in rule else None
    if low and high:
        return f" in {low[0]}{num(low[1])}, {num(high[1])}{high[0]}"
    if low:
        return f" {'>=' if low[0] == '[' else '>'} {num(low[1])}"
    if high:
        return f" {'<=' if high[0] == ']' else '<'} {num(high[1])}"
    return ""


# ----------------------------------------------------------------------------- YAML files
# qcxr.config.read_yaml's loader and messages: one line with the file, line and column.


def line_column(text: str, position: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def yaml_problem(err: Any) -> str:
    """A PyYAML error as "line L, column C: <problem> (<context> that starts at line L', ...)"."""
    mark = err.problem_mark or err.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = err.problem or err.context or "malformed YAML"
    if "'\\t'" in problem:
        problem += "; YAML indents with spaces, not tabs"
    context = err.context if err.problem else None
    if context and err.context_mark and err.context_mark is not mark:
        cm = err.context_mark
        context += f" that starts at line {cm.line + 1}, column {cm.column + 1}"
    return where + problem + (f" ({context})" if context else "")


@functools.cache
def unique_key_loader() -> type:
    """A yaml.SafeLoader that refuses a key given twice in one mapping."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults` may be overridden: that is what it is for
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # SafeLoader's own error names it
                if key in seen:
                    first = seen[key]
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} is given twice in one mapping (first at line "
                        f"{first.line + 1}, column {first.column + 1}); YAML would keep the last",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader
