"""A Prefect flow whose plain parameters reach the API without importing FastAPI.

Prefect serializes a flow run's parameters with FastAPI's `jsonable_encoder`, and its
first use imports FastAPI (0.3-1 s of the CLI's anchor run on the 2-core machine, issue
10) only to copy a few strings, integers and booleans. `PlainFlow` passes parameters
that are already JSON values (None, bool, int, float, str) through unchanged, which is
what `jsonable_encoder` returns for them, and leaves anything else to Prefect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect.flows import Flow

_PLAIN = (type(None), bool, int, float, str)


class PlainFlow(Flow):
    """`prefect.flows.Flow`, with a FastAPI-free path for JSON-valued parameters."""

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        if all(type(v) in _PLAIN for v in parameters.values()):
            return dict(parameters)
        return super().serialize_parameters(parameters)


def plain_flow(**options: Any) -> Callable[[Callable[..., Any]], PlainFlow]:
    """Like ``@prefect.flow(**options)``, making a `PlainFlow`."""

    def decorate(fn: Callable[..., Any]) -> PlainFlow:
        return PlainFlow(fn=fn, **options)

    return decorate
