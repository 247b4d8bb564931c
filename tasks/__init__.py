"""Pipeline steps.

The modules here are pure (no Prefect, no network): canonical records, Merkle trees,
windows, deduplication, aggregates, payloads and checkpoints. `tasks.steps` wraps the
I/O steps as Prefect tasks with retries.
"""
