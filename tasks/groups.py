"""Partition groups: which partitions of a topic one anchor writer owns, and the scope
(object-key prefix, log origin) of that writer's state and log (pure).

A topic anchored without groups has one scope, named by the topic: ``state/<topic>/…``,
``log/<topic>/…``, ``head/<topic>/<size>``, origin ``streamnotary/<topic>``. With the
setting ``partition_groups = [[0, 1], [2, 3]]`` each group is its own scope,
``<topic>/<group>``, so every key function that takes a topic takes a scope name and
gives ``state/<topic>/<group>/…``, ``log/<topic>/<group>/…``, ``head/<topic>/<group>/<size>``
and origin ``streamnotary/<topic>/<group>``: own lease, cursor, plan, log and heads.

A group's name is derived from its partitions (``p0_1`` for ``[0, 1]``), never from its
position in the setting: changing the assignment gives new names, hence new logs, and a
partition can never silently move between two live logs. (No ``+`` or spaces: the name is
part of the log origin, which is a signed-note key name.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GROUP_PREFIX = "p"


class GroupConfigError(ValueError):
    """`partition_groups` is malformed: empty groups, negative or repeated partitions."""


def group_name(partitions: Iterable[int]) -> str:
    """``[1, 0]`` -> ``p0_1``: the name of the group of these partitions."""
    return GROUP_PREFIX + "_".join(str(p) for p in sorted(set(partitions)))


@dataclass(frozen=True)
class PartitionGroup:
    """One group: its name and the partitions it anchors."""

    name: str
    partitions: frozenset[int]

    @classmethod
    def of(cls, partitions: Iterable[int]) -> PartitionGroup:
        parts = frozenset(partitions)
        return cls(group_name(parts), parts)


@dataclass(frozen=True)
class LogScope:
    """Whose state and log a key belongs to: a topic, or one partition group of it.

    `name` is what the key functions of `storage.layout` and `storage.tlog` take as their
    "topic" argument; without a group it is the topic itself, so every key stays as it was.
    """

    topic: str
    group: str | None = None

    @property
    def name(self) -> str:
        return self.topic if self.group is None else f"{self.topic}/{self.group}"


def parse_groups(value: Any) -> list[list[int]]:
    """The setting `partition_groups` (a list of lists of partitions, or its JSON text).

    Empty means no groups (one writer per topic). Each group needs at least one
    partition, and no partition may be in two groups (`GroupConfigError`).
    """
    import json

    if value in (None, "", []):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise GroupConfigError(f"partition_groups is not JSON: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(g, list) and g for g in value):
        raise GroupConfigError("partition_groups must be a list of non-empty partition lists")
    out: list[list[int]] = []
    seen: set[int] = set()
    for g in value:
        if not all(type(p) is int and p >= 0 for p in g):
            raise GroupConfigError(f"partition_groups: {g!r} holds a non-partition")
        if seen & set(g) or len(set(g)) != len(g):
            raise GroupConfigError(f"partition_groups: a partition of {g!r} is in two groups")
        seen |= set(g)
        out.append(sorted(g))
    return out


def groups_of(assignment: Sequence[Sequence[int]]) -> list[PartitionGroup]:
    """The configured groups, in setting order."""
    return [PartitionGroup.of(g) for g in assignment]


def find_group(assignment: Sequence[Sequence[int]], name: str) -> PartitionGroup:
    """The group called `name` (`GroupConfigError` if no configured group has that name)."""
    for g in groups_of(assignment):
        if g.name == name:
            return g
    known = ", ".join(g.name for g in groups_of(assignment)) or "none configured"
    raise GroupConfigError(f"no partition group {name!r} (groups: {known})")


def assignment_problems(
    groups: Mapping[str, Iterable[int]], topic_partitions: Iterable[int]
) -> list[str]:
    """Why an assignment of partitions to groups is not a partition of the topic.

    The union of the groups' partitions must be the topic's partitions, each exactly
    once: a partition in no group is never anchored, one in two groups is anchored twice
    into two logs that each look complete.
    """
    problems: list[str] = []
    owner: dict[int, str] = {}
    for name, parts in sorted(groups.items()):
        if name != group_name(parts):
            problems.append(f"group {name!r} does not name its partitions {sorted(parts)}")
        for p in parts:
            if p in owner:
                problems.append(f"partition {p} is claimed by groups {owner[p]!r} and {name!r}")
            else:
                owner[p] = name
    topic = set(topic_partitions)
    for p in sorted(topic - set(owner)):
        problems.append(f"partition {p} of the topic is in no group: never anchored")
    for p in sorted(set(owner) - topic):
        problems.append(f"group {owner[p]!r} claims partition {p}, which the topic does not have")
    return problems


def entry_partitions(entry: Mapping[str, Any]) -> set[int]:
    """Every partition a log entry names: a window's ranges, a run's read, quarantined,
    unattributable and held-open offsets (entries are schema-valid, keys are decimal)."""
    out: set[int] = set()
    for member in ("ranges", "read", "quarantined", "unattributable"):
        out |= {int(p) for p in entry.get(member) or {}}
    for ranges in (entry.get("held_open") or {}).values():
        out |= {int(p) for p in ranges}
    return out


def foreign_entries(
    entries: Sequence[Mapping[str, Any]], partitions: Iterable[int]
) -> list[tuple[int, set[int]]]:
    """(log index, foreign partitions) of each entry that names a partition outside its
    group's: a window anchored in the wrong group, or a run that read another group's."""
    mine = set(partitions)
    return [(i, ps - mine) for i, e in enumerate(entries) if (ps := entry_partitions(e)) - mine]


def owner_of(groups: Iterable[PartitionGroup], partitions: Iterable[int]) -> PartitionGroup:
    """The one group that owns all of `partitions` (a window's, a bundle's): the group
    whose log must hold it. `GroupConfigError` if they lie in no group or in two."""
    wanted = set(partitions)
    owners = [g for g in groups if wanted & g.partitions]
    if not wanted or len(owners) != 1 or not wanted <= owners[0].partitions:
        names = ", ".join(g.name for g in owners) or "none"
        raise GroupConfigError(
            f"partition(s) {sorted(wanted)} are not in exactly one partition group ({names})"
        )
    return owners[0]


def is_scope_of(topic: str, scope: str) -> bool:
    """Whether `scope` (a head entry's ``topic``) is `topic` or one of its groups'
    ``<topic>/<group>`` scopes (`LogScope.name`)."""
    if scope == topic:
        return True
    head, _, group = scope.rpartition("/")
    parts = group[len(GROUP_PREFIX) :].split("_")
    return (
        head == topic
        and group.startswith(GROUP_PREFIX)
        and all(p.isascii() and p.isdigit() for p in parts)
    )
