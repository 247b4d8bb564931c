"""Adapters to the outside world: Kafka, object stores, ledgers."""
