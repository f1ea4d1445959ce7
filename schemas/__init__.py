"""The framebus event contract: topics, CloudEvents encoding, and (as they land) event models."""
