"""orchestrator.engine."""
