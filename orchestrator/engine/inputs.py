"""Run inputs: the check lives in ``spec.inputs`` (``orch validate`` checks a schedule's
inputs with it too); the engine and its callers import it from here as before."""

from __future__ import annotations

from ..spec.inputs import resolve_inputs

__all__ = ["resolve_inputs"]
