"""Choosing a training-free method's one free option on val, so that test numbers are not tuned on test.

Sum fusion's text weight and Slerp's angle share are the only knobs of the fusion baselines
(`zscir.methods.registry.MethodSpec.grid` names each method's knob and its default grid). ``zscir eval
--benchmark real --tune-on val`` evaluates every candidate on val, keeps the best val R@1 of each *group*,
and reports only the chosen ones on test:

* ``-m sum`` (the knob not given) expands to the method's default grid, ``sum:weight=0.1`` … ``0.9``;
* ``-m sum:weight=0.3 -m sum:weight=0.5`` is an explicit grid: candidates that differ only in the knob form
  one group;
* everything else (``-m tscir:checkpoint=A`` and ``B`` differ in the checkpoint, not in a knob) is a group of
  its own and is evaluated on test directly: two seeds stay two rows.

Ties on val go to the candidate listed first (the grid's order), so the choice is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

__all__ = ["TuneGroup", "tuning_groups", "choose", "seed_groups"]


@dataclass
class TuneGroup:
    """Candidates (``-m`` texts) of which one is chosen on val; ``knob`` is None for a single fixed method."""

    name: str
    knob: str | None
    candidates: list[str] = field(default_factory=list)

    @property
    def tuned(self) -> bool:
        return len(self.candidates) > 1


def _split(spec: str) -> tuple[str, list[tuple[str, str]]]:
    name, _, opts = spec.partition(":")
    pairs = []
    for kv in (o for o in opts.split(",") if o):
        key, eq, value = kv.partition("=")
        if not eq:
            raise ValueError(f"-m {spec!r}: option {kv!r} is not KEY=VALUE")
        pairs.append((key.strip().replace("-", "_"), value))
    return name, pairs


def tuning_groups(specs: list[str], grid_of: Callable[[str], tuple[str, tuple[float, ...]] | None]
                  ) -> list[TuneGroup]:
    """Group the ``-m`` texts ``specs`` into the choices to be made on val (in the order first given).

    ``grid_of(name)``: the method's ``(knob, default values)`` or None (`MethodSpec.grid`).
    """
    groups: dict[str, TuneGroup] = {}
    for spec in specs:
        name, pairs = _split(spec)
        grid = grid_of(name)
        knob = grid[0] if grid else None
        rest = [(k, v) for k, v in pairs if k != knob]
        if knob is None:
            key = spec
            candidates = [spec]
        else:
            key = name + (":" + ",".join(f"{k}={v}" for k, v in rest) if rest else "")
            if any(k == knob for k, _ in pairs):
                candidates = [spec]
            else:  # the knob not given: the default grid
                candidates = [f"{key}{',' if rest else ':'}{knob}={v:g}" for v in grid[1]]
        g = groups.setdefault(key, TuneGroup(key, knob))
        g.candidates.extend(c for c in candidates if c not in g.candidates)
    return list(groups.values())


def choose(group: TuneGroup, val_score: dict[str, float]) -> str:
    """The candidate of ``group`` with the highest val score (the first listed on a tie)."""
    missing = [c for c in group.candidates if c not in val_score]
    if missing:
        raise ValueError(f"no val score for {', '.join(missing)}")
    return max(group.candidates, key=lambda c: (val_score[c], -group.candidates.index(c)))


def seed_groups(specs: list[str]) -> list[list[str]]:
    """Groups of two or more ``-m`` texts that differ only in their ``checkpoint`` (runs of one method with
    other seeds), in the order first given; `zscir.eval.real.mean_result` averages each group."""
    groups: dict[tuple, list[str]] = {}
    for spec in specs:
        name, pairs = _split(spec)
        if not any(k == "checkpoint" for k, _ in pairs):
            continue
        groups.setdefault((name, tuple(sorted((k, v) for k, v in pairs if k != "checkpoint"))), []).append(spec)
    return [g for g in groups.values() if len(g) > 1]
