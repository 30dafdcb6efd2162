"""Built-in agent types, registered through the same entry points as any plugin."""
