"""orchestrator.state."""
