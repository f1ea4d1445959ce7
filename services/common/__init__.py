"""Settings and thin adapters (Kafka, S3, ffmpeg) shared by every service."""
