"""Built-in syncbridge connectors (installed as the `syncbridge_connectors` package)."""
