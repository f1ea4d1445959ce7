"""framebus services: one subpackage per service, plus ``common`` adapters and the CLI."""
