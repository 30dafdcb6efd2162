"""Moved to ``orchestrator.events`` (the event contract sits beside ``errors.py``).

This alias stays for plugins and scripts that imported it from here.
"""

from __future__ import annotations

from ..events import EVENT_TYPES, PHASE_STATES, Event, EventSink, SecretMasker

__all__ = ["EVENT_TYPES", "PHASE_STATES", "Event", "EventSink", "SecretMasker"]
