"""Templates and conditions: the only module that imports jinja2.

Everything runs in Jinja2's ImmutableSandboxedEnvironment with StrictUndefined,
so a typo is an error rather than empty text, a template cannot mutate the data
it reads, and ``when:`` is never silently false. A string that is exactly one
``{{ ... }}`` keeps the value's type. Values in the context (phase outputs,
inputs) are data: they are never rendered again, whatever they contain.

The sandbox does not bound CPU or memory on its own, so every render runs under
a ``Budget``: a deadline (and a cancel flag) checked at every call, attribute,
operator, loop step and piece of output, and size bounds on everything that can
allocate at once: ``**``, ``*``, ``+`` and ``%`` results, ``str`` methods that pad
or repeat (``ljust``, ``center``, ``zfill``, ``format``, ``replace``...), the
filters that do (``indent``, ``center``, ``format``, ``batch``, ``slice``,
``wordwrap``, ``truncate``, ``replace``, ``tojson``), ``lipsum``, ``range`` and the
rendered text itself. A template that would pass a bound fails with a clear
message instead of taking the machine's memory or CPU.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import operator
import re
import string
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing
from jinja2.visitor import NodeTransformer

from .errors import ExpressionError, Location, OrchError
from .template_syntax import has_template, is_template

__all__ = [
    "DEFAULT_RENDER_SECONDS",
    "Budget",
    "budget_scope",
    "is_costly",
    "check_expression",
    "check_template",
    "evaluate",
    "filter_names",
    "has_template",
    "is_template",
    "private_access",
    "references",
    "render",
    "render_shell",
    "template_references",
    "unknown_names",
]

_MAX_POW_BITS = 4096  # results of ** and of int * int above this many bits are refused
_MAX_SEQ_LEN = 1_000_000  # results of * and + on strings and lists, padding widths
_MAX_OUTPUT = 10_000_000  # characters of rendered text
_MAX_RANGE = 100_000  # items of one range(); loops are bounded by the deadline
#: seconds a render may take when the caller gives no deadline of its own
DEFAULT_RENDER_SECONDS = 10.0
_TICKS = 256  # budget checks between two looks at the clock
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)
_UNKNOWN = Location("<expression>")
_TOO_DEEP = "it is nested too deeply (parentheses, operators or blocks); split it up"


class Budget:
    """How long one render may take; ``cancel()`` (from another thread) stops it.

    ``deadline`` is a ``time.monotonic()`` value (None: ``DEFAULT_RENDER_SECONDS``
    from the first check). ``why`` says what the deadline is, for the message.
    """

    __slots__ = ("cancelled", "deadline", "seconds", "ticks", "why")

    def __init__(self, seconds: float | None = None, why: str = "the limit for a template"):
        self.seconds = DEFAULT_RENDER_SECONDS if seconds is None else max(seconds, 0.0)
        self.deadline = time.monotonic() + self.seconds
        self.why = why
        self.cancelled = False
        self.ticks = 0

    def cancel(self) -> None:
        """Make the render stop at its next check (thread-safe: one attribute write)."""
        self.cancelled = True

    def check(self) -> None:
        """Raise SecurityError when the render was cancelled or ran past its deadline."""
        if self.cancelled:
            raise SecurityError("rendering was cancelled")
        if time.monotonic() > self.deadline:
            raise SecurityError(f"rendering took longer than {_seconds(self.seconds)} ({self.why})")


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:g}s"


_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "orch_render_budget", default=None
)


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.ticks += 1
    if budget.ticks % _TICKS == 0 or budget.cancelled:
        budget.check()


@contextlib.contextmanager
def budget_scope(budget: Budget) -> Iterator[Budget]:
    """Every render inside the block (in this thread or task) shares ``budget``."""
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


_COSTLY = re.compile(r"\{%|\{\{[^}]*[(*%~+\[]")


def is_costly(value: Any) -> bool:
    """Whether rendering ``value`` may take long: a block (``{% %}``), or an
    expression with a call, an operator or a subscript. ``{{ a.b | tojson }}``
    costs the size of the data at most, so it is not."""
    if isinstance(value, str):
        return _COSTLY.search(value) is not None
    if isinstance(value, Mapping):
        return any(is_costly(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(is_costly(v) for v in value)
    return False


def _budgeted(budget: Budget | None) -> contextvars.Token[Budget | None] | None:
    """Install a budget for this render (a nested render keeps the outer one)."""
    if _BUDGET.get() is not None:
        return None
    return _BUDGET.set(budget if budget is not None else Budget())


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"**", "*", "+", "%"})

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        _tick()
        if operator_ == "**":
            _check_pow(left, right)
            return operator.pow(left, right)
        if operator_ == "*":
            _check_mul(left, right)
            return operator.mul(left, right)
        if operator_ == "+":
            _check_add(left, right)
            return operator.add(left, right)
        if operator_ == "%":
            if isinstance(left, str):  # ``'%05d' % x``: printf formatting
                _check_printf(left, right if isinstance(right, tuple) else (right,))
            return operator.mod(left, right)
        return super().call_binop(context, operator_, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        # Data wins over methods: `phases.items` is the phase 'items', not dict.items.
        if isinstance(obj, Mapping) and attribute in obj:
            return self.getitem(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _tick()
        _check_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def _generate(self, source: nodes.Template, *args: Any, **kwargs: Any) -> str:
        _Bounds().visit(source)
        return super()._generate(source, *args, **kwargs)

    @staticmethod
    def orch_loop(items: Any) -> Iterator[Any]:
        """What every ``{% for %}`` walks: one budget step per item."""
        for item in items:
            _tick()
            yield item

    @staticmethod
    def orch_concat(*parts: Any) -> str:
        """What every ``a ~ b`` computes: a bounded join of the parts' text."""
        _tick()
        texts = [p if isinstance(p, str) else str(p) for p in parts]
        if sum(len(t) for t in texts) > _MAX_SEQ_LEN:
            raise SecurityError(f"joining text with ~ exceeds {_MAX_SEQ_LEN} characters")
        return "".join(texts)


class _Bounds(NodeTransformer):
    """Routes ``{% for %}`` and ``~`` through the sandbox's bounded helpers."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _helper("orch_loop", [node.iter], node.lineno)  # type: ignore[list-item]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _helper("orch_concat", list(node.nodes), node.lineno)


def _helper(name: str, args: list[nodes.Expr], lineno: int) -> nodes.Call:
    return nodes.Call(nodes.EnvironmentAttribute(name), args, [], None, None, lineno=lineno)


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


def _size(seq: Any) -> int:
    """Elements of a sequence, counting a text element as its length (a list of big
    strings repeated is as big as its text once printed)."""
    if isinstance(seq, str):
        return len(seq)
    return sum(len(x) if isinstance(x, str) else 1 for x in seq)


def _check_mul(left: Any, right: Any) -> None:
    for seq, n in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
            if _size(seq) * n > _MAX_SEQ_LEN:
                raise SecurityError(
                    f"repeating a sequence {n} times exceeds {_MAX_SEQ_LEN} elements"
                )
    if _is_int(left) and _is_int(right):
        if left.bit_length() + right.bit_length() > _MAX_POW_BITS:
            raise SecurityError(f"the product is too large (more than {_MAX_POW_BITS} bits)")


def _check_add(left: Any, right: Any) -> None:
    if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
        if _size(left) + _size(right) > _MAX_SEQ_LEN:
            raise SecurityError(f"joining two sequences exceeds {_MAX_SEQ_LEN} elements")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_width(value: Any, what: str) -> None:
    if _is_int(value) and abs(value) > _MAX_SEQ_LEN:
        raise SecurityError(f"{what} {value} exceeds {_MAX_SEQ_LEN}")


_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _check_printf(text: str, args: Iterable[Any]) -> None:
    """``'%0999999999d' % 1``: refuse a width or precision above the bound."""
    if "%" not in text:
        return
    star = False
    for m in _PRINTF.finditer(text):
        for part in m.groups():
            if part == "*":
                star = True
            elif part is not None and len(part) > 6:
                _check_width(int(part), "a format width")
    if star:
        for arg in args:
            _check_width(arg, "a format width")


def _check_format(text: str, args: Iterable[Any]) -> None:
    """``'{:>999999999}'.format(1)``: refuse a width in a format spec above the bound."""
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError:
        return  # str.format raises its own error
    nested = False
    for _, _, spec, _ in fields:
        if spec:
            nested = nested or "{" in spec
            for digits in _DIGITS.findall(spec):
                if len(digits) > 6:
                    _check_width(int(digits), "a format width")
    if nested:
        for arg in args:
            _check_width(arg, "a format width")


# str methods whose result grows with an argument: what each argument is
_STR_WIDTHS = {"ljust": 0, "rjust": 0, "center": 0, "zfill": 0, "expandtabs": 0}


def _check_call(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Bound the ``str`` methods a template calls that can allocate without limit."""
    target = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format
    owner = getattr(target, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(target, "__name__", "")
    if name in _STR_WIDTHS:
        for value in (*args, *kwargs.values()):
            _check_width(value, f"{name}() width")
        if name == "expandtabs" and args and _is_int(args[0]):
            if owner.count("\t") * abs(args[0]) > _MAX_SEQ_LEN:
                raise SecurityError(f"expandtabs() would exceed {_MAX_SEQ_LEN} characters")
    elif name in ("format", "format_map"):
        _check_format(owner, (*args, *kwargs.values()))
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1])
    elif name == "join" and args:
        _check_join(owner, args[0])


def _check_replace(text: str, old: Any, new: Any) -> None:
    if isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        hits = len(text) + 1 if old == "" else text.count(old)
        if len(text) + hits * (len(new) - len(old)) > _MAX_SEQ_LEN:
            raise SecurityError(f"replace() would exceed {_MAX_SEQ_LEN} characters")


def _check_join(sep: Any, items: Any) -> None:
    if isinstance(items, (list, tuple)):
        if len(str(sep)) * len(items) + _size(items) > _MAX_SEQ_LEN:
            raise SecurityError(f"join() would exceed {_MAX_SEQ_LEN} characters")


def _bounded_filter(
    fn: Callable[..., Any], check: Callable[[tuple[Any, ...], dict[str, Any]], None]
) -> Callable[..., Any]:
    @functools.wraps(fn)  # keeps Jinja's pass_environment / pass_eval_context marks
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _tick()
        check(args, kwargs)
        return fn(*args, **kwargs)

    return wrapper


def _widths(*names: str, skip: int = 1) -> Callable[[tuple[Any, ...], dict[str, Any]], None]:
    """A check of every int argument after the first ``skip`` (and the named keywords)."""

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        for value in (*args[skip:], *(kwargs.get(n) for n in names)):
            _check_width(value, "a width or count")

    return check


def _filter_checks() -> dict[str, Callable[[tuple[Any, ...], dict[str, Any]], None]]:
    def fmt(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if args and isinstance(args[0], str):
            _check_printf(args[0], (*args[1:], *kwargs.values()))

    def join(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # (eval_ctx, value, d="", attribute=None)
        if len(args) >= 2:
            _check_join(args[2] if len(args) > 2 else kwargs.get("d", ""), args[1])

    def replace(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # (eval_ctx, s, old, new, count)
        if len(args) >= 4 and isinstance(args[1], str):
            _check_replace(args[1], args[2], args[3])

    return {
        "indent": _widths("width"),
        "center": _widths("width"),
        "wordwrap": _widths("width", skip=2),  # (environment, s, width, ...)
        "truncate": _widths("length", "leeway", skip=2),
        "batch": _widths("linecount"),
        "slice": _widths("slices", skip=2),  # (context, value, slices, ...)
        "format": fmt,
        "replace": replace,
        "join": join,
    }


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    from jinja2.utils import generate_lorem_ipsum

    _tick()
    if not (_is_int(n) and _is_int(min) and _is_int(max)) or n > 100 or max > 1000:
        raise SecurityError("lipsum() gives at most 100 paragraphs of at most 1000 words")
    return generate_lorem_ipsum(n, html, min, max)


def _range(*args: int) -> _Counted:
    """``range`` for templates: at most _MAX_RANGE items, each a budget step."""
    rng = range(*args)
    if len(rng) > _MAX_RANGE:
        raise SecurityError(f"range() gives at most {_MAX_RANGE:,} items, not {len(rng):,}")
    return _Counted(rng)


class _Counted:
    """A range that ticks the budget as it is walked (and still has a length)."""

    __slots__ = ("_rng",)

    def __init__(self, rng: range) -> None:
        self._rng = rng

    def __iter__(self) -> Iterator[int]:
        for i in self._rng:
            _tick()
            yield i

    def __len__(self) -> int:
        return len(self._rng)

    def __repr__(self) -> str:
        return repr(self._rng)


def _setup(env: _Sandbox) -> _Sandbox:
    env.filters["tojson"] = _tojson  # Jinja's own escapes <>&' for HTML; ours keeps text as is
    for name, check in _filter_checks().items():
        env.filters[name] = _bounded_filter(env.filters[name], check)
    env.globals["range"] = _range
    env.globals["lipsum"] = _lipsum
    return env


@lru_cache(maxsize=1)
def _env() -> _Sandbox:
    return _setup(_Sandbox(undefined=_Undefined, autoescape=False, keep_trailing_newline=True))


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
    return _setup(env)


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

    _check_width(indent, "tojson indent")

    return dumps(value, indent=indent, what="the value given to tojson")


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
    elif isinstance(exc, MemoryError):
        msg = f"cannot evaluate '{source}': it needs more memory than there is"
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


def render(
    value: Any,
    context: Mapping[str, Any],
    *,
    where: Location | None = None,
    budget: Budget | None = None,
) -> Any:
    """Render every template string inside ``value`` (dicts and lists are walked).

    Strings without template syntax are returned as they are (the fast path).
    A string that is exactly one ``{{ ... }}`` gives the expression's value with
    its type. Raises ExpressionError (located at ``where``) on any failure,
    including running past ``budget`` (``DEFAULT_RENDER_SECONDS`` when None).
    """
    token = _budgeted(budget) if has_template(value) else None
    try:
        return _render_value(value, context, where)
    except SecurityError as exc:  # the budget ran out between two strings
        raise _fail(exc, _clip(value), where) from exc
    finally:
        if token is not None:
            _BUDGET.reset(token)


def _clip(value: Any) -> str:
    text = value if isinstance(value, str) else "..."
    return text if len(text) <= 200 else text[:197] + "..."


def _render_value(value: Any, context: Mapping[str, Any], where: Location | None) -> Any:
    if isinstance(value, str):
        if not is_template(value):
            return value
        return _render_string(value, context, where)
    if isinstance(value, Mapping):
        return {k: _render_value(v, context, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_render_value(v, context, where) for v in value]
    return value


def render_shell(
    text: str,
    context: Mapping[str, Any],
    *,
    where: Location | None = None,
    budget: Budget | None = None,
) -> str:
    """Render a shell command string, shell-quoting the value of every ``{{ ... }}``.

    Each expression's value becomes one quoted word (a list: one word per element;
    dicts, booleans and null as JSON), so no value can become shell syntax. The
    result is always a string, even for a lone ``{{ ... }}``. Literal template text
    is kept as written. Raises ExpressionError (located at ``where``) on any failure.
    """
    if not is_template(text):
        return text
    token = _budgeted(budget)
    try:
        return _generate(_compile_shell_template(text), context)
    except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise _fail(exc, text, where, context) from exc
    except (RecursionError, MemoryError) as exc:
        raise _fail(exc, text, where) from exc
    finally:
        if token is not None:
            _BUDGET.reset(token)


def _generate(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    """The rendered text, piece by piece: each piece is a budget step, the total bounded."""
    parts: list[str] = []
    size = 0
    for piece in template.generate(**context):
        size += len(piece)
        if size > _MAX_OUTPUT:
            raise SecurityError(f"the rendered text exceeds {_MAX_OUTPUT:,} characters")
        parts.append(piece)
        _tick()
    return "".join(parts)


@lru_cache(maxsize=1024)
def _compile_shell_template(text: str) -> jinja2.Template:
    return _shell_env().from_string(text)


def _render_string(text: str, context: Mapping[str, Any], where: Location | None) -> Any:
    single = _single_expression(text)
    try:
        if single is not None:
            return _defined(_compile_expression(single)(**context))
        return _generate(_compile_template(text), context)
    except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise _fail(exc, text, where, context) from exc
    except (RecursionError, MemoryError) as exc:
        raise _fail(exc, text, where) from exc


def evaluate(
    expression: str,
    context: Mapping[str, Any],
    *,
    where: Location | None = None,
    budget: Budget | None = None,
) -> Any:
    """Evaluate a condition (``when:``; no braces). Undefined names raise ExpressionError."""
    text = expression.strip()
    inner = _single_expression(text)
    if inner is not None:  # tolerate `when: "{{ x }}"`
        text = inner
    token = _budgeted(budget)
    try:
        return _defined(_compile_expression(text)(**context))
    except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise _fail(exc, expression, where, context) from exc
    except (RecursionError, MemoryError) as exc:
        raise _fail(exc, expression, where) from exc
    finally:
        if token is not None:
            _BUDGET.reset(token)


@contextlib.contextmanager
def _quiet_unwinding() -> Iterator[None]:
    """Around a parse or walk of a user's template (validate's checks).

    Jinja recurses: a template nested too deeply raises RecursionError, which the
    caller reports ("nested too deeply"). On Python 3.13 every generator closed while
    that error unwinds is also reported, as "Exception ignored ... RecursionError", by
    ``sys.unraisablehook``, called at the depth limit where no Python function can run.
    Meanwhile the hook is the builtin ``id``, which drops the report; the previous
    hook is back afterwards.
    """
    previous = sys.unraisablehook
    sys.unraisablehook = id
    try:
        yield
    finally:
        sys.unraisablehook = previous


def check_template(text: str) -> str | None:
    """The syntax error message of a template string, or None when it parses."""
    if not is_template(text):
        return None
    try:
        with _quiet_unwinding():
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
        with _quiet_unwinding():
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
        with _quiet_unwinding():
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
    found: list[tuple[int, str]] = []  # (depth in its access chain, name)
    try:
        with _quiet_unwinding():
            tree = _env().parse(text)
            for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
                name = _private_name(node)
                if name is not None:
                    depth, inner = 0, getattr(node, "node", None)
                    while isinstance(inner, (nodes.Getattr, nodes.Getitem, nodes.Filter)):
                        depth, inner = depth + 1, getattr(inner, "node", None)
                    found.append((depth, name))
    except (jinja2.TemplateSyntaxError, RecursionError):
        return None
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


@lru_cache(maxsize=1)
def filter_names() -> frozenset[str]:
    """The names of the filters templates can use."""
    return frozenset(_env().filters)


def unknown_names(text: str, *, condition: bool = False) -> list[tuple[str, str, str | None]]:
    """The filters and tests a template (or condition) uses that do not exist:
    (``filter`` or ``test``, the name, the closest known name or None). Empty when
    the text does not parse (check_template reports that)."""
    if condition:
        inner = _single_expression(text.strip())
        text = "{{ " + (inner if inner is not None else text) + " }}"
    elif not is_template(text):
        return []
    env = _env()
    try:
        with _quiet_unwinding():
            tree = env.parse(text)
            found = [("filter", n.name, env.filters) for n in tree.find_all(nodes.Filter)]
            found += [("test", n.name, env.tests) for n in tree.find_all(nodes.Test)]
    except (jinja2.TemplateSyntaxError, RecursionError):
        return []
    unknown: list[tuple[str, str, str | None]] = []
    for kind, name, known in found:
        if name in known or any(u[1] == name for u in unknown):
            continue
        near = difflib.get_close_matches(name, list(known), n=1)
        unknown.append((kind, name, near[0] if near else None))
    return unknown


def references(expression: str) -> set[tuple[str, ...]]:
    """Dotted names a condition (no braces) reads; see template_references."""
    inner = _single_expression(expression.strip())
    return template_references("{{ " + (inner if inner is not None else expression) + " }}")


def _collect(tree: nodes.Node) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    locals_: set[str] = set()
    for target in tree.find_all(
        (nodes.For, nodes.Assign, nodes.AssignBlock, nodes.With, nodes.Macro, nodes.CallBlock)
    ):
        if isinstance(target, nodes.Macro):
            locals_.add(target.name)  # a macro may call itself (recursion)
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
