"""A real S3 server (versitygw, POSIX backend) built from the Go module proxy, on loopback."""

from framebus.infra.s3.server import VERSITYGW_VERSION, S3Server

__all__ = ["VERSITYGW_VERSION", "S3Server"]
