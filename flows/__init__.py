"""Prefect flows: the pipeline's table of contents."""
