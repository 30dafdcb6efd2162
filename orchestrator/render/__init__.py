"""Rendering at the edge: the only package that imports rich.

Problems, run progress, summaries, tables and plan graphs; the core never imports it.
"""

from __future__ import annotations
