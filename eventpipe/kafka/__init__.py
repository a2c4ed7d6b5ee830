"""Kafka plumbing: client settings, the acknowledged producer, topic admin."""
