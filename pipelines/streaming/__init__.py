"""Streaming moderation over Kafka: an SDF Kafka reader, the shared tagging steps and durable per-bundle sinks."""
