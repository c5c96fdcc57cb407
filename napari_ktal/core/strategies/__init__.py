"""Query strategies: the registry and one module per strategy family."""
