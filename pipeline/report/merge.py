"""A data set's shards, merged: one table per mergeable ``Table`` over the jobs of one data set.

``python run.py -m input.shard=0/4,1/4,2/4,3/4 ...`` runs one data set as four jobs. The sweep
index groups the jobs whose overrides differ only in ``input.shard`` and merges the tables their
stages marked mergeable (``vizpipe.pipeline.stage.Merge``: key columns, a weight column, summed columns,
weighted means), e.g. the CAM stage's per-class table: images summed, accuracy and mean score
weighted by images. Nothing here knows a stage; it reads the ``StageResult`` records in the
manifests, as the rest of the index does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vizpipe.pipeline.report.jobs import JobData, split_override
from vizpipe.pipeline.stage import Table

SHARD_KEY = "input.shard"

__all__ = ["SHARD_KEY", "ShardGroup", "merge_tables", "shard_groups"]


@dataclass
class ShardGroup:
    """The jobs of one data set (same overrides but ``input.shard``) and their merged tables."""

    params: list[str]  # the overrides the jobs share, without input.shard
    shards: list[str]  # the shards found, e.g. ["0/4", "1/4"]
    ok: int  # jobs whose tables were merged
    missing: list[str] = field(default_factory=list)  # "I/N" of shards without a result
    tables: list[Table] = field(default_factory=list)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(float(value)) else None


def merge_tables(tables: list[Table]) -> Table:
    """One table from several with the same columns and ``merge`` spec (rows sorted by key).

    Summed columns add up; mean columns become sum(weight x mean) / sum(weight) over the rows
    whose mean is a number; other columns keep their value when every shard agrees, else "–".
    A last row "all" merges every row.
    """
    first = tables[0]
    spec = first.merge
    if spec is None:
        raise ValueError(f"table {first.title!r} is not mergeable")
    summed = {spec.weight, *spec.count}
    groups: dict[tuple[Any, ...], list[list[Any]]] = {}
    for t in tables:
        for row in t.rows:
            groups.setdefault(tuple(row[i] for i in spec.keys), []).append(row)

    def combine(rows: list[list[Any]], key: tuple[Any, ...] | None) -> list[Any]:
        out: list[Any] = []
        for col in range(len(first.columns)):
            values = [r[col] for r in rows]
            if key is not None and col in spec.keys:
                out.append(key[spec.keys.index(col)])
            elif col in summed:
                out.append(sum(_number(v) or 0 for v in values))
            elif col in spec.means:
                pairs = [(_number(r[spec.weight]) or 0.0, _number(r[col])) for r in rows]
                pairs = [(w, v) for w, v in pairs if v is not None and w > 0]
                total = sum(w for w, _ in pairs)
                out.append(sum(w * v for w, v in pairs) / total if total else None)
            else:
                out.append(values[0] if all(v == values[0] for v in values) else "–")
        whole = [isinstance(v, float) and v.is_integer() and i in summed for i, v in enumerate(out)]
        return [int(v) if w else v for v, w in zip(out, whole, strict=True)]

    def order(key: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple((0, k) if isinstance(k, int | float) else (1, str(k)) for k in key)

    rows = [combine(groups[k], k) for k in sorted(groups, key=order)]
    every = [r for t in tables for r in t.rows]
    total = combine(every, None)
    for i in spec.keys:
        total[i] = "all" if i == spec.keys[0] else ""
    return Table(
        title=first.title,
        columns=list(first.columns),
        rows=[*rows, total],
        group=first.group,
        code=list(first.code),  # links are not kept: they are relative to one shard's run folder
        caption=f"Merged over {len(tables)} shard(s): "
        f"summed {', '.join(first.columns[i] for i in sorted(summed))}; "
        f"means weighted by {first.columns[spec.weight]}",
        merge=spec,
    )


def _shard_order(text: str) -> list[int]:
    return [int(x) if x.isdigit() else 0 for x in text.split("/")]


def shard_groups(jobs: list[JobData], swept: list[str]) -> list[ShardGroup]:
    """Jobs grouped by every override but ``input.shard``, with their mergeable tables merged."""
    if SHARD_KEY not in swept:
        return []
    groups: dict[tuple[str, ...], list[JobData]] = {}
    for j in jobs:
        if j.params.get(SHARD_KEY) is None:
            continue  # no shard of a data set (or its overrides are unreadable)
        rest = tuple(sorted(o for o in j.overrides if split_override(o)[0] != SHARD_KEY))
        groups.setdefault(rest, []).append(j)
    out = []
    for params, members in groups.items():
        shards = [str(j.params.get(SHARD_KEY)) for j in members]
        done = [j for j in members if j.status == "ok" and j.tables]
        group = ShardGroup(list(params), shards, len(done))
        merged = {str(j.params.get(SHARD_KEY)) for j in done}
        expected = set(shards)
        for text in shards:  # "I/N": every slice 0..N-1 is expected, even one whose job never started
            i, _, n = text.partition("/")
            if n.isdigit():
                expected.update(f"{k}/{n}" for k in range(int(n)))
        group.missing = sorted(expected - merged, key=_shard_order)
        by_title: dict[str, list[Table]] = {}
        for j in done:
            for t in j.tables:
                by_title.setdefault(t.title, []).append(t)
        for tables in by_title.values():
            same = [t for t in tables if t.columns == tables[0].columns and t.merge == tables[0].merge]
            group.tables.append(merge_tables(same))
        out.append(group)
    return out
