"""orchestrator.render."""
