"""The plugin-author SDK: subclass Agent, return AgentResult, raise AgentFailure.

See ``orchestrator.agents.base`` for the smallest complete agent.
"""

from __future__ import annotations

from .base import (
    Agent,
    AgentContext,
    AgentFailure,
    AgentProtocol,
    AgentResult,
    ConfigProblem,
)
from .registry import ENTRY_POINT_GROUP, AgentInfo, AgentRegistry

__all__ = [
    "ENTRY_POINT_GROUP",
    "Agent",
    "AgentContext",
    "AgentFailure",
    "AgentInfo",
    "AgentProtocol",
    "AgentRegistry",
    "AgentResult",
    "ConfigProblem",
]
