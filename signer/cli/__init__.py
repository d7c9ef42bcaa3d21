"""The `cf-sign` command line: one module per command group, heavy imports deferred."""
