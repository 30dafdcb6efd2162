"""The ``orch`` command. The only package that imports typer, and only when it is needed.

``app`` (the typer application) and ``main`` live in ``cli/root.py`` and are
imported on first use: ``orch validate`` with plain arguments is answered by
``cli/fast.py`` without typer (a pre-commit hook runs it on every commit), as
``orch --help`` is answered from ``cli/help.txt``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .root import app, main

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    """``app`` and ``main``, imported (with typer) when first asked for."""
    if name in __all__:
        from . import root

        return getattr(root, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
