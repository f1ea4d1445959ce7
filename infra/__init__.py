"""Local infrastructure for framebus: a real Apache Kafka broker and a real S3 server.

Both are fetched from package registries on first use (Kafka jars from Maven Central,
versitygw from the Go module proxy), cached outside the git tree, and run as child
processes bound to 127.0.0.1. Production points framebus at real clusters instead
(see ``services.common.settings``), and nothing here runs.
"""
