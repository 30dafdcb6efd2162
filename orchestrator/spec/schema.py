"""Schema checks: the only jsonschema import. The workflow schema and agent ``with:`` schemas.

One piece of code checks both: errors become plain-sentence Problems located
through the SourceMap. A compiled fast path answers "valid?" for the common
case; jsonschema (the source of truth) runs only to explain a failure.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import AgentConfigError, Problem, SchemaViolation
from .source import JsonPath, SourceMap

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

__all__ = [
    "CHECKED_BY_BUILD",
    "INTERNAL",
    "MAX_SCHEMA_PROBLEMS",
    "SchemaReport",
    "check_agent_config",
    "check_agent_schema",
    "check_workflow",
    "describe",
    "editor_schema",
    "json_path",
    "workflow_schema",
    "workflow_schema_text",
    "rendered_config_problems",
]

#: Marks an agent config key for orch's own tests (a test hook): not shown to users.
INTERNAL = "x-internal"
#: A schema annotation naming what a value must be, for a message: ``a list of agent names``.
EXPECTED = "x-expected"
#: The schema check stops after this many problems (a file can hold a million bad values).
MAX_SCHEMA_PROBLEMS = 200
_DURATION_HELP = "use 500ms, 30s, 5m, 1h or a number of seconds"
_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


@dataclass(slots=True)
class SchemaReport:
    """Problems found by a schema check, and the JSON paths they are about."""

    problems: list[Problem] = field(default_factory=list)
    bad_paths: set[JsonPath] = field(default_factory=set)

    def is_bad(self, path: JsonPath) -> bool:
        """Whether ``path`` or one of its ancestors already has a schema problem."""
        if not self.bad_paths:
            return False
        p = tuple(path)
        return any(p[:n] in self.bad_paths for n in range(len(p) + 1))


# -- loading --------------------------------------------------------------------


@lru_cache(maxsize=1)
def workflow_schema_text() -> str:
    """The bundled workflow JSON Schema (2020-12), as the file's text.

    Read from the installed package (``orchestrator/schemas``) or, in a source
    checkout, from ``schemas/`` at the repository root.
    """
    # A plain file first (an installed wheel, a source checkout): importlib.resources
    # (and the zipfile module it brings) only for a package imported from a zip.
    for candidate in (
        Path(__file__).parents[1] / "schemas" / "workflow.schema.json",  # the wheel
        Path(__file__).parents[2] / "schemas" / "workflow.schema.json",  # a checkout
    ):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    from importlib import resources

    packaged = resources.files("orchestrator") / "schemas" / "workflow.schema.json"
    return packaged.read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def workflow_schema() -> Mapping[str, Any]:
    """The bundled workflow JSON Schema (2020-12), as a mapping."""
    loaded: dict[str, Any] = json.loads(workflow_schema_text())
    return loaded


@lru_cache(maxsize=1)
def _workflow_validator() -> Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(dict(workflow_schema()))


@lru_cache(maxsize=1)
def _workflow_fast() -> Callable[[Any], bool] | None:
    schema = workflow_schema()
    return _compile(schema, schema.get("$defs", {}))


class _AgentCheck:
    """One agent schema's checks: the fast path now, the jsonschema validator when needed."""

    __slots__ = ("schema", "plain", "fast", "_validator")

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        self.plain = json.loads(json.dumps(schema, default=str))
        self.fast = _compile(self.plain, self.plain.get("$defs", {}))
        self._validator: Validator | None = None

    @property
    def validator(self) -> Validator:
        if self._validator is None:
            from jsonschema import Draft202012Validator

            self._validator = Draft202012Validator(self.plain)
        return self._validator


_agent_checks: dict[int, _AgentCheck] = {}


def _agent_check(schema: Mapping[str, Any]) -> _AgentCheck:
    known = _agent_checks.get(id(schema))
    if known is None or known.schema is not schema:
        known = _agent_checks[id(schema)] = _AgentCheck(schema)
    return known


def check_agent_schema(schema: Mapping[str, Any]) -> str | None:
    """The reason ``schema`` is not a valid JSON Schema (2020-12), or None.

    A schema made only of the keywords the fast path knows, each with an argument of
    the right shape, is valid without asking jsonschema (`orch validate` then does not
    import it); anything else goes to jsonschema's meta-schema check.
    """
    if _well_formed(schema):
        return None
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(dict(schema))
    except jsonschema.SchemaError as exc:
        return str(exc.message)
    return None


# -- checks ---------------------------------------------------------------------


def check_workflow(data: Any, smap: SourceMap) -> SchemaReport:
    """Check raw workflow data against the bundled schema; every error, located."""
    report = SchemaReport()
    fast = _workflow_fast()
    if _passes(fast, data):
        return report
    explained = (e for e in _workflow_validator().iter_errors(data) if not _for_editors(e))
    for n, error in enumerate(explained):
        if n == MAX_SCHEMA_PROBLEMS:
            where = smap.value(tuple(error.absolute_path))
            report.problems.append(
                SchemaViolation(
                    f"more than {MAX_SCHEMA_PROBLEMS} schema problems;"
                    " the schema check stopped here",
                    location=where,
                    hint="fix the problems above and run orch validate again",
                ).to_problem()
            )
            break
        _explain(_leaf(error), (), data, smap, report, SchemaViolation, _workflow_owner)
    return report


def check_agent_config(
    config: Mapping[str, Any],
    schema: Mapping[str, Any],
    smap: SourceMap,
    *,
    at: Callable[[JsonPath], JsonPath],
    owner: str | Callable[[JsonPath], str],
) -> SchemaReport:
    """Check an agent's merged ``with:`` against its type's config schema.

    ``at`` maps a path inside ``config`` to the document path to report it at;
    ``owner`` names the config in messages (``the with of phase 'a'``), or gives
    that name for a path inside ``config``. Errors
    about a value that is (or holds) a template string are skipped: that value
    is only known at run time.
    """
    report = SchemaReport()
    check = _agent_check(schema)
    if _passes(check.fast, config):
        return report
    validator = check.validator
    name = owner if callable(owner) else (lambda p, o=owner: o)
    for error in validator.iter_errors(dict(config)):
        leaf = _leaf(error)
        if _holds_template(leaf.instance) and leaf.validator not in _KEY_RULES:
            continue  # the value is known at run time (keys are known now)
        rel = tuple(leaf.absolute_path)
        _explain(leaf, rel, config, smap, report, AgentConfigError, lambda p, d: name(p), at=at)
    return report


def _for_editors(error: ValidationError) -> bool:
    """Whether the error comes from a rule stated for editors that the build explains."""
    schema = _leaf(error).schema
    return isinstance(schema, Mapping) and bool(schema.get(CHECKED_BY_BUILD))


#: rules about which keys a mapping has: they hold whatever its values are
_KEY_RULES = frozenset(
    {
        "required",
        "additionalProperties",
        "propertyNames",
        "dependentRequired",
        "unevaluatedProperties",
    }
)


def rendered_config_problems(
    config: Mapping[str, Any], schema: Mapping[str, Any]
) -> list[tuple[JsonPath, str]]:
    """Why a rendered ``with:`` fails its agent type's config schema (empty when it
    passes): (the path inside ``with``, ``with.KEY: message``) per problem. The
    engine checks every templated input with it before the call, so an agent never
    sees a bad input."""
    check = _agent_check(schema)
    if _passes(check.fast, config):
        return []
    out: list[tuple[JsonPath, str]] = []
    for error in check.validator.iter_errors(dict(config)):
        leaf = _leaf(error)
        rel = tuple(leaf.absolute_path)
        message = f"{json_path(('with', *rel))}: {leaf.message}"
        out.append((rel, message if len(message) <= 300 else message[:297] + "..."))
    return out


def _leaf(error: ValidationError) -> ValidationError:
    from jsonschema.exceptions import best_match

    while error.validator in ("anyOf", "oneOf") and error.context:
        # A branch that accepts the value's type says more ("not one of 'fast', 'slow'",
        # "agent.one_of must be a list") than one that does not ("must be a string").
        typed = [e for e in error.context if e.validator != "type" or e.relative_path]
        error = best_match(typed or error.context)
    return error


def _holds_template(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(_holds_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_template(v) for v in value)
    return False


# -- messages -------------------------------------------------------------------


def json_path(path: Iterable[str | int]) -> str:
    """A JSON path in the user's terms: ``phases[2].timeout``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _workflow_owner(path: JsonPath, data: Any) -> str:
    if not path:
        return "the workflow"
    if len(path) == 2 and path[0] in ("phases", "on_success", "on_failure", "finally"):
        phase = _get(data, path)
        if isinstance(phase, Mapping) and isinstance(phase.get("id"), str):
            return f"phase '{phase['id']}'"
    if len(path) == 2 and path[0] == "agents":
        return f"agent '{path[1]}'"
    if len(path) == 2 and path[0] == "inputs":
        return f"input '{path[1]}'"
    return json_path(path)


def _get(data: Any, path: Sequence[str | int]) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value}'" if len(value) <= 60 else f"'{value[:57]}...'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{value!r}"


def _explain(
    error: ValidationError,
    base: JsonPath,
    data: Any,
    smap: SourceMap,
    report: SchemaReport,
    kind: type[SchemaViolation] | type[AgentConfigError],
    owner: Callable[[JsonPath, Any], str],
    *,
    at: Callable[[JsonPath], JsonPath] = lambda p: p,
) -> None:
    """Turn one jsonschema error into Problems (one per unknown or missing key)."""
    rel: JsonPath = tuple(error.absolute_path)
    doc = at(rel)
    shown = json_path(doc)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    title = schema.get("title")
    value = error.instance
    hint: str | None = None

    def add(message: str, path: JsonPath, *, key: bool = False, hint: str | None = None) -> None:
        loc = smap.key(path) if key else smap.value(path)
        if kind is SchemaViolation:
            err: SchemaViolation | AgentConfigError = SchemaViolation(
                message, location=loc, json_path=json_path(path), hint=hint
            )
        else:
            err = AgentConfigError(message, location=loc, hint=hint)
        report.problems.append(err.to_problem())
        report.bad_paths.add(tuple(path))

    v = error.validator
    vv: Any = error.validator_value
    if v == "additionalProperties" and isinstance(value, Mapping):
        known = list(schema.get("properties", {}))
        for extra in [k for k in value if k not in known]:
            # an agent config names its owner by the key (phase or agent with)
            where = "in " + owner(rel + (extra,) if kind is AgentConfigError else rel, data)
            if not rel and kind is SchemaViolation:
                where = "at the top level"
            msg = f"unknown key '{extra}' {where}"
            close = difflib.get_close_matches(str(extra), known, n=1)
            if close:
                msg += f"; did you mean '{close[0]}'?"
                hint = None
            else:
                hint = "allowed keys: " + ", ".join(known) if known else "it takes no keys"
            add(msg, at(rel + (extra,)), key=True, hint=hint)
        return
    if v == "required" and isinstance(value, Mapping):
        for missing in [k for k in vv if k not in value]:
            add(f"{owner(rel, data)} is missing the required key '{missing}'", doc)
        return
    if "propertyNames" in error.schema_path:  # the instance is a key of the mapping at rel
        what = {"agents": "agent name", "inputs": "input name"}.get(str(doc[-1]) if doc else "")
        allowed = "letters, digits, _ and -" if what == "agent name" else "letters, digits and _"
        add(
            f"{shown}: '{value}' is not a valid {what or 'key'}; use {allowed},"
            " starting with a letter or _",
            at(rel + (str(value),)),
            key=True,
        )
        return
    if title == "duration" and v in ("type", "pattern"):
        message = f"{shown}: {_show(value)} is not a duration; {_DURATION_HELP}"
    elif title == "duration" and v == "minimum":
        message = f"{shown}: a duration cannot be negative ({_show(value)})"
    elif title == "positive duration":
        message = f"{shown}: a duration must be greater than 0, not {_show(value)}"
        hint = "leave the key out for the default"
    elif title == "rate limit" and v in ("type", "pattern"):
        message = f"{shown}: {_show(value)} is not a rate limit; use N/s or N/m, e.g. 10/s"
    elif v == "pattern" and doc[-1:] == ("id",):
        message = (
            f"{shown}: {_show(value)} is not a valid id; use letters, digits, _ and -,"
            " starting with a letter or _"
        )
    elif v == "type":
        expected = vv
        names = [expected] if isinstance(expected, str) else list(expected)
        want = schema.get(EXPECTED) or " or ".join(_TYPE_NAMES.get(n, n) for n in names)
        message = f"{shown} must be {want}, not {describe(value)}"
        hint = _type_hint(names, schema, value, doc)
    elif v == "enum":
        options = [str(o) for o in vv]
        message = f"{shown}: {_show(value)} is not one of " + ", ".join(f"'{o}'" for o in options)
        close = difflib.get_close_matches(str(value), options, n=1)
        if len(doc) == 3 and doc[0] == "inputs" and doc[2] == "type":
            # the names other tools use for the JSON types (GitHub Actions, Argo, Python)
            alias = _INPUT_TYPE_ALIASES.get(str(value).lower())
            close = [alias] if alias else close
            example = _INPUT_TYPE_EXAMPLES.get(close[0]) if close else None
            hint = example.replace("NAME", str(doc[1])) if example else None
        if close:
            message += f"; did you mean '{close[0]}'?"
    elif v == "const":
        message = f"{shown} must be {_show(vv)}, not {_show(value)}"
    elif v == "minimum":
        message = f"{shown} must be at least {vv}, not {_show(value)}"
    elif v == "exclusiveMinimum":
        message = f"{shown} must be above {vv}, not {_show(value)}"
    elif v in ("maximum", "exclusiveMaximum"):
        message = f"{shown} must be at most {vv}, not {_show(value)}"
    elif v in ("minItems", "minLength") and vv == 1:
        message = f"{shown} must not be empty"
    elif v == "uniqueItems":
        message = f"{shown} lists the same item twice"
    elif v == "pattern":
        message = f"{shown}: {_show(value)} does not match the pattern '{vv}'"
    else:
        message = f"{shown or 'the document'}: {_plain(error.message)}"
    if not shown:
        message = message.replace(": ", " ", 1) if message.startswith(": ") else message
    add(message, doc, hint=hint)


_INPUT_TYPE_ALIASES = {
    "list": "array",
    "sequence": "array",
    "tuple": "array",
    "dict": "object",
    "map": "object",
    "mapping": "object",
    "hash": "object",
    "int": "integer",
    "float": "number",
    "double": "number",
    "bool": "boolean",
    "str": "string",
    "text": "string",
}
_INPUT_TYPE_EXAMPLES = {
    "array": 'a list input: type: array, e.g. default: [a, b]; --input NAME=\'["a", "b"]\'',
    "object": "a mapping input: type: object, e.g. default: {key: value};"
    " --input NAME='{\"key\": 1}'",
}
_LISTS_OF_PHASES = frozenset({"phases", "on_success", "on_failure", "finally"})


def _type_hint(
    names: list[str], schema: Mapping[str, Any], value: Any, doc: JsonPath
) -> str | None:
    """A hint for a value of the wrong type, where the fix is knowable from the value."""
    key = str(doc[-1]) if doc and isinstance(doc[-1], str) else None
    if names == ["string"] and isinstance(value, (bool, int, float)):
        # only when quoting the same text would be accepted
        text = ("true" if value else "false") if isinstance(value, bool) else repr(value)
        enum = schema.get("enum")
        pattern = schema.get("pattern")
        if enum is not None and text not in enum:
            return None
        if isinstance(pattern, str) and re.search(pattern, text) is None:
            return None
        kind = "boolean" if isinstance(value, bool) else "number"
        return f"YAML 1.2 reads this as a {kind}; quote it to keep it as text"
    if (
        "array" in names
        and key in _LISTS_OF_PHASES
        and len(doc) == 1
        and isinstance(value, Mapping)
    ):
        first = next(iter(value), "a")
        return f'{key} is a list: write "- id: {first}" for each phase'
    if names == ["array"] and key is not None and isinstance(value, (str, int, float)):
        if not isinstance(value, bool):
            return f"write {key}: [{value}]"
    return None


def describe(value: Any) -> str:
    """A value as a message shows it: ``the number 5``, ``the string 'x'``, ``a list``."""
    if isinstance(value, bool):
        return f"the boolean {_show(value)}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {_show(value)}"
    if value is None:
        return "null (an empty value)"
    return _show(value)


def _plain(message: str) -> str:
    text = " ".join(message.split())
    return text[:1].lower() + text[1:].rstrip(".")


# -- fast path ------------------------------------------------------------------
# A conservative compiled check for the keywords our schemas use. It may call a
# valid document invalid (jsonschema then finds nothing), never the reverse; a
# schema with any other keyword is not compiled (None: jsonschema always runs).
# `not`, `oneOf` and `if` are left out on purpose: negating a conservative answer
# would make it optimistic.

_IGNORED = frozenset(
    {"title", "description", "$schema", "$id", "$defs", "$comment", "default", "examples"}
    | {"errorMessage", "patternErrorMessage"}  # the YAML language server's messages
)
_PY_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


class _Unsupported(Exception):
    pass


def _compile(schema: Any, defs: Mapping[str, Any]) -> Callable[[Any], bool] | None:
    try:
        return _compile_node(schema, defs, {})
    except (_Unsupported, KeyError, TypeError, AttributeError, ValueError, re.error):
        return None


def _compile_node(
    schema: Any, defs: Mapping[str, Any], memo: dict[str, Callable[[Any], bool]]
) -> Callable[[Any], bool]:
    if schema is True:
        return lambda v: True
    if schema is False:
        return lambda v: False
    if not isinstance(schema, Mapping):
        raise _Unsupported
    checks: list[Callable[[Any], bool]] = []
    for key, arg in schema.items():
        if key in _IGNORED or key.startswith("x-"):  # x-...: annotations, no assertion
            continue
        if key == "additionalProperties":
            checks.append(_additional(arg, set(schema.get("properties", {})), defs, memo))
            continue
        checks.append(_keyword(key, arg, defs, memo))
    if len(checks) == 1:
        return checks[0]
    return lambda v: all(c(v) for c in checks)


def _keyword(
    key: str, arg: Any, defs: Mapping[str, Any], memo: dict[str, Callable[[Any], bool]]
) -> Callable[[Any], bool]:
    if key == "$ref":
        name = str(arg).removeprefix("#/$defs/")
        if name not in memo:
            memo[name] = _compile_node(defs[name], defs, memo)
        return memo[name]
    if key == "type":
        tests = [_PY_TYPES[t] for t in ([arg] if isinstance(arg, str) else arg)]
        return lambda v: any(t(v) for t in tests)
    if key == "properties":
        subs = {k: _compile_node(s, defs, memo) for k, s in arg.items()}
        return lambda v: (
            not isinstance(v, dict) or all(subs[k](x) for k, x in v.items() if k in subs)
        )
    if key == "required":
        names = list(arg)
        return lambda v: not isinstance(v, dict) or all(n in v for n in names)
    if key == "items":
        sub = _compile_node(arg, defs, memo)
        return lambda v: not isinstance(v, list) or all(sub(x) for x in v)
    if key == "enum":
        options = list(arg)
        return lambda v: any(_same(v, o) for o in options)
    if key == "const":
        return lambda v: _same(v, arg)
    if key == "pattern":
        return _pattern(arg)
    if key == "minimum":
        return lambda v: not _PY_TYPES["number"](v) or v >= arg
    if key == "exclusiveMinimum":
        return lambda v: not _PY_TYPES["number"](v) or v > arg
    if key == "maximum":
        return lambda v: not _PY_TYPES["number"](v) or v <= arg
    if key == "minLength":
        return lambda v: not isinstance(v, str) or len(v) >= arg
    if key == "minItems":
        return lambda v: not isinstance(v, list) or len(v) >= arg
    if key == "uniqueItems":
        return lambda v: not isinstance(v, list) or not arg or _unique(v)
    if key in ("allOf", "anyOf"):  # monotone: a conservative branch keeps them conservative
        branches = [_compile_node(sub, defs, memo) for sub in arg]
        if key == "allOf":
            return lambda v: all(b(v) for b in branches)
        return lambda v: any(b(v) for b in branches)
    if key == "maximum":
        return lambda v: not _PY_TYPES["number"](v) or v <= arg
    if key == "exclusiveMinimum":
        return lambda v: not _PY_TYPES["number"](v) or v > arg
    if key == "exclusiveMaximum":
        return lambda v: not _PY_TYPES["number"](v) or v < arg
    if key == "maxLength":
        return lambda v: not isinstance(v, str) or len(v) <= arg
    if key == "maxItems":
        return lambda v: not isinstance(v, list) or len(v) <= arg
    if key == "propertyNames":
        sub = _compile_node(arg, defs, memo)
        return lambda v: not isinstance(v, dict) or all(sub(k) for k in v)
    raise _Unsupported(key)


def _pattern(text: str) -> Callable[[Any], bool]:
    """The ``pattern`` check, compiled when a string first meets it (the cron pattern
    alone costs milliseconds, and most files have no schedule). A pattern that does
    not compile raises re.error there: ``_passes`` then says "ask jsonschema"."""
    compiled: list[re.Pattern[str]] = []

    def check(value: Any) -> bool:
        if not isinstance(value, str):
            return True
        if not compiled:
            compiled.append(re.compile(text))
        return compiled[0].search(value) is not None

    return check


def _passes(fast: Callable[[Any], bool] | None, value: Any) -> bool:
    """Whether the fast path finds ``value`` valid (False: jsonschema decides and explains)."""
    try:
        return fast is not None and fast(value)
    except re.error:  # a pattern that does not compile: as if the fast path had none
        return False


def _additional(
    arg: Any, known: set[str], defs: Mapping[str, Any], memo: dict[str, Callable[[Any], bool]]
) -> Callable[[Any], bool]:
    sub = _compile_node(arg, defs, memo)
    return lambda v: not isinstance(v, dict) or all(sub(x) for k, x in v.items() if k not in known)


def _same(value: Any, option: Any) -> bool:
    if isinstance(value, bool) != isinstance(option, bool):
        return False
    return bool(value == option) and type(value) is type(option)


def _unique(items: list[Any]) -> bool:
    try:
        return len(set(items)) == len(items)
    except TypeError:
        return False


# -- the schema for editors -------------------------------------------------------

#: Marks a subschema that states, for editors, a rule ``orch validate`` checks and
#: explains in its own words (a zero timeout, a zero rate, a cron field out of range):
#: the schema check reports nothing for it and leaves the message to the build.
CHECKED_BY_BUILD = "x-checked-by-build"


_SHAPE_KEYS = frozenset(
    {"type", "properties", "additionalProperties", "patternProperties", "$defs", "description"}
)


class _Types(Protocol):
    """What ``editor_schema`` reads of an agent registry (``AgentRegistry`` is one)."""

    def names(self) -> list[str]: ...

    def resolve(self, name: str) -> Any: ...


def editor_schema(registry: _Types) -> dict[str, Any]:
    """The workflow schema with each installed agent type's ``with:`` schema, for editors.

    A phase, fallback or compensation whose ``agent`` is a type gets that type's schema
    for its ``with`` through ``if``/``then`` (the YAML language server then completes and
    checks keys inside ``with:``); an agent under ``agents:`` gets it by its ``type``,
    without ``required`` (a phase's ``with`` may supply those). Any value may also be a
    template, as ``orch validate`` reads it. An agent type that fails to load is left
    out (``orch agents`` says why).
    """
    from ..errors import AgentError

    schema: dict[str, Any] = json.loads(workflow_schema_text())
    defs = schema.setdefault("$defs", {})
    defs["template"] = {
        "description": "A template, rendered at run time: {{ ... }}.",
        "type": "string",
        "pattern": r"\{\{|\{%",
    }
    types: list[str] = []
    for name in registry.names():
        try:
            config = registry.resolve(name).config_schema
        except AgentError:
            continue
        plain = json.loads(json.dumps(config, default=str))
        # the title is what editors show for the schema (a completion that fills in the
        # required keys, "Expected ..."): without one, the $defs name (with_shell)
        title = f"with: of a {name} agent"
        full = {**_templated(_rebase(plain, f"#/$defs/with_{name}")), "title": title}
        defs[f"with_{name}"] = full
        # shared by the phases that use the named agent: what a key may be, not which must be
        defs[f"with_{name}_shared"] = {k: v for k, v in full.items() if k in _SHAPE_KEYS}
        defs[f"with_{name}_shared"]["title"] = title
        types.append(name)

    def rules(key: str, suffix: str) -> list[dict[str, Any]]:
        return [
            {
                "if": {"properties": {key: {"const": t}}, "required": [key]},
                "then": {"properties": {"with": {"$ref": f"#/$defs/with_{t}{suffix}"}}},
            }
            for t in types
        ]

    for target, key, suffix in (
        ("phase", "agent", ""),
        ("agent_call", "agent", ""),
        ("agent", "type", "_shared"),
    ):
        node = defs.get(target)
        if isinstance(node, dict) and types:
            node["allOf"] = [*node.get("allOf", []), *rules(key, suffix)]
    return schema


def _rebase(node: Any, base: str) -> Any:
    """``node`` with its local ``$ref``s (``#/...``) pointing under ``base``."""
    if isinstance(node, dict):
        out = {k: _rebase(v, base) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            out["$ref"] = base + ref[1:]
        return out
    if isinstance(node, list):
        return [_rebase(v, base) for v in node]
    return node


def _templated(node: Any) -> Any:
    """``node`` where each property's value may also be a template string."""
    if not isinstance(node, dict):
        return node
    out = dict(node)
    props = out.get("properties")
    if isinstance(props, dict):
        wrapped = {}
        for key, sub in props.items():
            inner = _templated(sub)
            either: dict[str, Any] = {"anyOf": [inner, {"$ref": "#/$defs/template"}]}
            if isinstance(sub, dict) and "description" in sub:
                either["description"] = sub["description"]
            if isinstance(sub, dict) and sub.get(INTERNAL):
                either["doNotSuggest"] = True  # valid, but not offered (the YAML language server)
            wrapped[key] = either
        out["properties"] = wrapped
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _templated(out[key])
    return out


# -- a meta-schema check for the fast path's keywords ------------------------------

_NUMBER_ARGS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
_COUNT_ARGS = frozenset({"minLength", "maxLength", "minItems", "maxItems"})
_SCHEMA_ARGS = frozenset({"items", "additionalProperties", "propertyNames"})
_TEXT_ARGS = frozenset({"title", "description", "$schema", "$id", "$comment", "$ref"})


def _well_formed(node: Any) -> bool:
    """Whether ``node`` is certainly a valid 2020-12 schema (False: do not know)."""
    if isinstance(node, bool):
        return True
    if not isinstance(node, Mapping):
        return False
    for key, arg in node.items():
        if not isinstance(key, str):
            return False
        if key.startswith("x-") or key in ("default", "examples", "const"):
            continue
        if key in _TEXT_ARGS or key in ("errorMessage", "patternErrorMessage"):
            ok = isinstance(arg, str)
        elif key in _NUMBER_ARGS:
            ok = isinstance(arg, (int, float)) and not isinstance(arg, bool)
        elif key in _COUNT_ARGS:
            ok = isinstance(arg, int) and not isinstance(arg, bool) and arg >= 0
        elif key in _SCHEMA_ARGS:
            ok = _well_formed(arg)
        elif key == "type":
            names = [arg] if isinstance(arg, str) else arg
            ok = isinstance(names, list) and bool(names) and all(n in _PY_TYPES for n in names)
        elif key in ("properties", "$defs"):
            ok = isinstance(arg, Mapping) and all(_well_formed(v) for v in arg.values())
        elif key == "required":
            ok = isinstance(arg, list) and all(isinstance(n, str) for n in arg)
        elif key == "enum":
            ok = isinstance(arg, list)
        elif key == "uniqueItems":
            ok = isinstance(arg, bool)
        elif key in ("allOf", "anyOf", "oneOf"):
            ok = isinstance(arg, list) and bool(arg) and all(_well_formed(v) for v in arg)
        elif key == "pattern":
            ok = isinstance(arg, str) and _compiles(arg)
        else:
            return False
        if not ok:
            return False
    return True


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True
