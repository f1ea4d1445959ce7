"""The scheduler: admission, tiered fair queueing, shape batching and credit-based dispatch.

The decisions live in pure modules (``admission``, ``ledger``, ``queue``, ``workers``,
``core``) that import no Kafka code and take the clock as an argument; ``app`` (Kafka lanes
in a faust-hosted service) feeds them decoded events and publishes what they decide.
"""
