"""Parameter sensitivity of Fusion-Diff: R@1 / R@10 on the world benchmark's CIRR part vs one knob.

Knobs: ``guidance_scale`` and ``steps`` (DDIM; sampling-time only, the gallery features are cached and
shared between points) and ``fusion_weight`` (the text share of the fused embedding at retrieval time —
the checkpoint was trained at one weight, so this measures how sensitive retrieval is to moving away
from it, for gallery and control alike). Writes a CSV and a PNG with one panel per knob.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

logger = logging.getLogger(__name__)

KNOBS = ("guidance_scale", "steps", "fusion_weight")


def run_sweep(make_composer: Callable[..., Any], grid: dict[str, Sequence[float]], out_dir: str | Path,
              world_seed: int = 0, limit: int | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """Evaluate ``make_composer(**{knob: value})`` at every grid point; write sweep.csv and sweep.png."""
    from zscir.eval.benchmarks import evaluate_benchmark
    from zscir.data.world.cache import ensure_world_benchmark

    root = ensure_world_benchmark(world_seed)
    rows: list[dict[str, Any]] = []
    for knob, values in grid.items():
        if knob not in KNOBS:
            raise ValueError(f"unknown sweep knob {knob!r}; choose from {KNOBS}")
        for v in values:
            v = int(v) if knob == "steps" else float(v)
            composer = make_composer(**{knob: v})
            r = evaluate_benchmark("cirr", root / "cirr", "val", composer, progress=progress, limit=limit)
            m = r["metrics"]
            desc = composer.describe()
            rows.append({"knob": knob, "value": v, "R@1": m["R@1"], "R@10": m["R@10"],
                         "Rsubset@1": m.get("Rsubset@1"), "sampling_ms_per_query": desc.get("sampling_ms_per_query")})
            logger.info("sweep %s=%s: %s", knob, v, rows[-1])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot_sweep(rows, out / "sweep.png")
    return rows


def plot_sweep(rows: list[dict[str, Any]], png: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    knobs = [k for k in KNOBS if any(r["knob"] == k for r in rows)]
    fig, axes = plt.subplots(1, len(knobs), figsize=(4.5 * len(knobs), 3.6), squeeze=False)
    for ax, knob in zip(axes[0], knobs):
        pts = sorted((r["value"], r["R@1"], r["R@10"]) for r in rows if r["knob"] == knob)
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1] for p in pts], "o-", label="R@1")
        ax.plot(xs, [p[2] for p in pts], "s--", label="R@10")
        ax.set_xlabel(knob)
        ax.set_ylabel("recall (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Fusion-Diff sensitivity (world benchmark, CIRR part)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
