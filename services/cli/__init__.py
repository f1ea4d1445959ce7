"""The ``framebus`` command line."""
