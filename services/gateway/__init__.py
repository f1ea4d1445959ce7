"""The HTTP gateway: FastAPI over the producer SDK and the materialized status and tenant tables."""
