"""Templates and conditions: the only module that imports jinja2.

Everything runs in Jinja2's ImmutableSandboxedEnvironment with StrictUndefined,
so a typo is an error rather than empty text, a template cannot mutate the data
it reads, and ``when:`` is never silently false. A string that is exactly one
``{{ ... }}`` keeps the value's type. Values in the context (phase outputs,
inputs) are data: they are never rendered again, whatever they contain.

The sandbox does not bound CPU or memory on its own; ``**`` and ``*`` are
intercepted so that ``9**(9**9)`` or ``'x' * 10**12`` are refused, and
``range`` is capped.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from .errors import ExpressionError, Location, OrchError

__all__ = [
    "check_expression",
    "check_template",
    "evaluate",
    "has_template",
    "is_template",
    "private_access",
    "references",
    "render",
    "render_shell",
    "template_references",
]

_MAX_POW_BITS = 4096  # results of ** above this many bits are refused
_MAX_SEQ_LEN = 1_000_000  # results of * on strings and lists above this length are refused
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)
_UNKNOWN = Location("<expression>")
_TOO_DEEP = "it is nested too deeply (parentheses, operators or blocks); split it up"


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"**", "*"})

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            _check_pow(left, right)
            return operator.pow(left, right)
        if operator_ == "*":
            _check_mul(left, right)
            return operator.mul(left, right)
        return super().call_binop(context, operator_, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Data wins over methods: `phases.items` is the phase 'items', not dict.items.
        if isinstance(obj, Mapping) and attribute in obj:
            return self.getitem(obj, attribute)
        return super().getattr(obj, attribute)


class _UndefinedName(jinja2.UndefinedError):
    """An undefined name or attribute; ``owner`` is what it was looked up on (or ``missing``)."""

    def __init__(self, message: str, owner: Any, name: Any, hinted: bool) -> None:
        super().__init__(message)
        self.owner = owner
        self.name = name
        self.hinted = hinted


class _Undefined(jinja2.StrictUndefined):
    """StrictUndefined whose error keeps what was looked up and on what, for a plain message."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[jinja2.UndefinedError] = jinja2.UndefinedError,
    ) -> None:
        def error(message: str) -> _UndefinedName:
            return _UndefinedName(message, obj, name, hint is not None)

        super().__init__(hint, obj, name, error)  # type: ignore[arg-type]


def _defined(value: Any) -> Any:
    """The value, or UndefinedError when an expression's result is undefined (StrictUndefined
    raises only when used, and a lone ``{{ x.nope }}`` would otherwise be passed on)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return value


def _check_pow(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        if abs(left).bit_length() * right > _MAX_POW_BITS:
            raise SecurityError(
                f"{left} ** {right} is too large to compute (more than {_MAX_POW_BITS} bits)"
            )


def _check_mul(left: Any, right: Any) -> None:
    for seq, n in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
            if len(seq) * n > _MAX_SEQ_LEN:
                raise SecurityError(
                    f"repeating a sequence {n} times exceeds {_MAX_SEQ_LEN} elements"
                )


@lru_cache(maxsize=1)
def _env() -> _Sandbox:
    env = _Sandbox(undefined=_Undefined, autoescape=False, keep_trailing_newline=True)
    env.filters["tojson"] = _tojson  # Jinja's own escapes <>&' for HTML; ours keeps text as is
    return env


@lru_cache(maxsize=1)
def _shell_env() -> _Sandbox:
    # Every `{{ }}` output passes through finalize: a value spliced into a shell
    # string is one quoted word (a list: one quoted word per element).
    env = _Sandbox(
        undefined=_Undefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_shell_quote,
    )
    env.filters["tojson"] = _tojson
    return env


def _shell_quote(value: Any) -> str:
    import shlex

    if isinstance(value, (list, tuple)):
        return " ".join(shlex.quote(_shell_word(v)) for v in value)
    return shlex.quote(_shell_word(value))


def _shell_word(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple, bool)) or value is None:
        return _tojson(value)
    return str(value)


def _tojson(value: Any, indent: int | None = None) -> str:
    from .jsontext import dumps

    return dumps(value, indent=indent, what="the value given to tojson")


def has_template(value: Any) -> bool:
    """Whether any string inside ``value`` (dicts and lists are walked) holds template syntax."""
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, Mapping):
        return any(has_template(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_template(v) for v in value)
    return False


def is_template(text: str) -> bool:
    """Whether a string holds template syntax (``{{``, ``{%`` or ``{#``)."""
    return "{{" in text or "{%" in text or "{#" in text


@lru_cache(maxsize=4096)
def _compile_template(text: str) -> jinja2.Template:
    return _env().from_string(text)


@lru_cache(maxsize=4096)
def _compile_expression(text: str) -> Callable[..., Any]:
    return _env().compile_expression(text, undefined_to_none=False)


def _single_expression(text: str) -> str | None:
    m = _SINGLE.match(text)
    if m is None:
        return None
    inner = m.group("expr")
    if "{{" in inner or "}}" in inner or "{%" in inner:
        return None
    return inner.strip()


def _fail(
    exc: Exception, source: str, where: Location | None, context: Mapping[str, Any] | None = None
) -> ExpressionError:
    hint: str | None = None
    if isinstance(exc, _UndefinedName) and not exc.hinted and isinstance(exc.name, str):
        message, near, hint = _undefined_name(exc.owner, exc.name, context or {})
        msg = f"{message} in '{source}'" + (f"; did you mean '{near[0]}'?" if near else "")
    elif isinstance(exc, jinja2.UndefinedError):
        msg = f"{_undefined_message(exc)} in '{source}'"
    elif isinstance(exc, jinja2.TemplateSyntaxError):
        msg = f"template syntax error in '{source}': {exc.message}"
    elif isinstance(exc, SecurityError):
        msg = f"not allowed in '{source}': {exc}"
    elif isinstance(exc, RecursionError):
        msg = f"cannot evaluate '{source}': {_TOO_DEEP}"
    elif isinstance(exc, OrchError):
        msg = f"cannot evaluate '{source}': {exc.message}"
    else:
        msg = f"cannot evaluate '{source}': {type(exc).__name__}: {exc}"
    return ExpressionError(msg, location=where or _UNKNOWN, hint=hint)


def _undefined_name(
    owner: Any, name: str, context: Mapping[str, Any]
) -> tuple[str, list[str], str | None]:
    """What an undefined ``owner.name`` means in the user's terms, close names, and a hint."""

    def close(options: Any) -> list[str]:
        return difflib.get_close_matches(name, [str(k) for k in options], n=1)

    if owner is missing:
        return f"undefined name '{name}'", close(context), None
    if owner is context.get("env"):
        return (
            f"environment variable '{name}' is not set",
            [],
            f"set it before the run, or give a fallback: env.{name} | default('...')",
        )
    if owner is context.get("secrets"):
        return f"secret '{name}' is not set", [], f"export {name}=... before the run"
    if owner is context.get("inputs"):
        return f"input '{name}' is not defined", close(owner), None
    phases = context.get("phases")
    if owner is phases and isinstance(phases, Mapping):
        return (
            f"phase '{name}' has no result here",
            close(phases),
            "a template reads the phases its phase depends on (and those that ran before)",
        )
    if isinstance(phases, Mapping):
        for pid, outcome in phases.items():
            if owner is outcome:
                fields = _fields(owner)
                near = close(fields)
                hint = None if near else "fields: " + ", ".join(fields)
                return f"phase '{pid}' has no field '{name}'", near, hint
            if owner is getattr(outcome, "output", None) and isinstance(owner, Mapping):
                return f"the output of phase '{pid}' has no key '{name}'", close(owner), None
    if isinstance(owner, Mapping):
        return f"no key '{name}' in the mapping", close(owner), None
    return f"'{name}' is not defined on {type(owner).__name__}", [], None


def _fields(obj: Any) -> list[str]:
    """The fields a template can read on ``obj``: its keys, or its public data attributes."""
    if isinstance(obj, Mapping):
        return sorted(str(k) for k in obj)
    return sorted(
        a for a in dir(obj) if not a.startswith("_") and not callable(getattr(obj, a, None))
    )


def _undefined_message(exc: Exception) -> str:
    text = str(exc)
    m = re.match(r"'(.+?)' is undefined", text)
    if m:
        return f"undefined name '{m.group(1)}'"
    m = re.match(r"'(.+?)' has no attribute '(.+?)'", text)
    if m:
        return f"'{m.group(2)}' is not defined on {m.group(1)}"
    return text


def render(value: Any, context: Mapping[str, Any], *, where: Location | None = None) -> Any:
    """Render every template string inside ``value`` (dicts and lists are walked).

    Strings without template syntax are returned as they are (the fast path).
    A string that is exactly one ``{{ ... }}`` gives the expression's value with
    its type. Raises ExpressionError (located at ``where``) on any failure.
    """
    if isinstance(value, str):
        if not is_template(value):
            return value
        return _render_string(value, context, where)
    if isinstance(value, Mapping):
        return {k: render(v, context, where=where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [render(v, context, where=where) for v in value]
    return value


def render_shell(text: str, context: Mapping[str, Any], *, where: Location | None = None) -> str:
    """Render a shell command string, shell-quoting the value of every ``{{ ... }}``.

    Each expression's value becomes one quoted word (a list: one word per element;
    dicts, booleans and null as JSON), so no value can become shell syntax. The
    result is always a string, even for a lone ``{{ ... }}``. Literal template text
    is kept as written. Raises ExpressionError (located at ``where``) on any failure.
    """
    if not is_template(text):
        return text
    try:
        return _compile_shell_template(text).render(**context)
    except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise _fail(exc, text, where, context) from exc
    except RecursionError as exc:
        raise _fail(exc, text, where) from exc


@lru_cache(maxsize=1024)
def _compile_shell_template(text: str) -> jinja2.Template:
    return _shell_env().from_string(text)


def _render_string(text: str, context: Mapping[str, Any], where: Location | None) -> Any:
    single = _single_expression(text)
    try:
        if single is not None:
            return _defined(_compile_expression(single)(**context))
        return _compile_template(text).render(**context)
    except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise _fail(exc, text, where, context) from exc
    except RecursionError as exc:
        raise _fail(exc, text, where) from exc


def evaluate(expression: str, context: Mapping[str, Any], *, where: Location | None = None) -> Any:
    """Evaluate a condition (``when:``; no braces). Undefined names raise ExpressionError."""
    text = expression.strip()
    inner = _single_expression(text)
    if inner is not None:  # tolerate `when: "{{ x }}"`
        text = inner
    try:
        return _defined(_compile_expression(text)(**context))
    except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise _fail(exc, expression, where, context) from exc
    except RecursionError as exc:
        raise _fail(exc, expression, where) from exc


def check_template(text: str) -> str | None:
    """The syntax error message of a template string, or None when it parses."""
    if not is_template(text):
        return None
    try:
        _env().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        return str(exc.message)
    except RecursionError:
        return _TOO_DEEP
    return None


def check_expression(text: str) -> str | None:
    """The syntax error message of a condition, or None when it parses."""
    inner = _single_expression(text.strip())
    try:
        _compile_expression(inner if inner is not None else text.strip())
    except jinja2.TemplateSyntaxError as exc:
        return str(exc.message)
    except RecursionError:
        return _TOO_DEEP
    return None


def template_references(text: str) -> set[tuple[str, ...]]:
    """Dotted names a template string reads, e.g. ``{('phases', 'a', 'output'), ('inputs', 'x')}``.

    Only constant attribute and item accesses are followed. A template that does
    not parse gives an empty set (check_template reports it).
    """
    if not is_template(text):
        return set()
    try:
        return _collect(_env().parse(text))
    except (jinja2.TemplateSyntaxError, RecursionError):
        return set()  # check_template reports it


# `._x`, `['_x']`, `attr(...)`: the only ways a template can name a `_` attribute
_MAYBE_PRIVATE = re.compile(r"""[.\[]\s*['"]?\s*_|\battr\b""")


def private_access(text: str, *, condition: bool = False) -> str | None:
    """The first attribute or key starting with ``_`` that a template (or condition) reads.

    ``{{ ''.__class__ }}``, ``{{ x['_y'] }}`` and ``{{ x | attr('_y') }}`` name one;
    the sandbox refuses them at run time, validate reports them. None when there is
    none, or when the text does not parse (check_template reports that).
    """
    if _MAYBE_PRIVATE.search(text) is None:  # the common case, without parsing
        return None
    if condition:
        inner = _single_expression(text.strip())
        text = "{{ " + (inner if inner is not None else text) + " }}"
    elif not is_template(text):
        return None
    try:
        tree = _env().parse(text)
    except (jinja2.TemplateSyntaxError, RecursionError):
        return None
    found: list[tuple[int, str]] = []  # (depth in its access chain, name)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        name = _private_name(node)
        if name is not None:
            depth, inner = 0, getattr(node, "node", None)
            while isinstance(inner, (nodes.Getattr, nodes.Getitem, nodes.Filter)):
                depth, inner = depth + 1, getattr(inner, "node", None)
            found.append((depth, name))
    if not found:
        return None
    # ``''.__class__.__mro__``: name the first access written, the innermost one
    return min(found, key=lambda f: f[0])[1]


def _private_name(node: nodes.Node) -> str | None:
    name: Any = None
    if isinstance(node, nodes.Getattr):
        name = node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        name = node.arg.value
    elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
        first = node.args[0]
        name = first.value if isinstance(first, nodes.Const) else None
    return name if isinstance(name, str) and name.startswith("_") else None


def references(expression: str) -> set[tuple[str, ...]]:
    """Dotted names a condition (no braces) reads; see template_references."""
    inner = _single_expression(expression.strip())
    return template_references("{{ " + (inner if inner is not None else expression) + " }}")


def _collect(tree: nodes.Node) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    locals_: set[str] = set()
    for target in tree.find_all((nodes.For, nodes.Assign, nodes.Macro)):
        for name in target.find_all(nodes.Name):
            if name.ctx in ("store", "param"):
                locals_.add(name.name)
    inner: set[int] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        chain = _chain(node)
        if chain is None:
            continue
        for sub in node.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
            inner.add(id(sub))
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        if id(node) in inner:
            continue
        chain = _chain(node)
        if chain and chain[0] not in locals_:
            found.add(chain)
    return found


def _chain(node: nodes.Node) -> tuple[str, ...] | None:
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem):
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, (str, int)):
                parts.append(str(node.arg.value))
                node = node.node
            else:
                parts.clear()  # a computed key: keep the part before it
                node = node.node
        elif isinstance(node, nodes.Name):
            if node.ctx != "load":
                return None
            parts.append(node.name)
            return tuple(reversed(parts))
        else:
            return None
