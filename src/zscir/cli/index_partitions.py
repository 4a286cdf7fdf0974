"""`zscir index SRC --out OUT --partitions N [--partition I] [--engine ray] [--jobs K]`: partitioned indexing.

A thin shell over `zscir.index.partitions.run_partitions` (docs/SCALING.md, "Indexing on many machines").
Without these options `zscir index` stays today's incremental folder indexer; Ray is imported only for
``--engine ray``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import typer

from zscir.cli.common import fail, write_output
from zscir.index.names import printable


@dataclass
class PartitionOptions:
    """The partition options of `zscir index` as given (None: not given)."""

    engine: str | None = None
    partitions: int | None = None
    partition: str | None = None
    jobs: int | None = None
    ray_address: str | None = None
    force: bool = False  #: partitioned whatever the options (shards and tables are never indexed otherwise)

    def wanted(self) -> bool:
        """Whether this run is a partitioned one (any option other than ``--engine local`` given)."""
        return (self.force or (self.engine is not None and self.engine != "local") or self.partitions is not None
                or self.partition is not None or self.jobs is not None or self.ray_address is not None)


def parse_shard(shard: str) -> tuple[int, int]:
    """``--shard I/N`` as ``(I, N)``; one error line unless 0 <= I < N (the incremental and the partitioned
    indexer read it alike)."""
    try:
        i, n = (int(x) for x in shard.split("/"))
        if not 0 <= i < n:
            raise ValueError
    except ValueError:
        fail(f"--shard {shard!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return i, n


def refuse_mixed(opts: PartitionOptions, *, shard: str | None, ann: str | None, hash_content: bool,
                 overwrite: bool) -> None:
    """Options of the incremental folder indexer that a partitioned run does not take: one error line.

    ``--shard I/N`` is taken as ``--partition I --partitions N`` (the same pictures, `shard_of`), so there is
    one mechanism behind both doors; without partition options it stays the incremental shard index.
    """
    if opts.engine not in (None, "local", "ray"):
        fail(f"--engine {opts.engine!r}: expected local or ray")
    if opts.ray_address is not None and opts.engine != "ray":
        fail("--ray-address is for --engine ray")
    if shard is not None:  # the same partition ids: --shard I/N is --partition I --partitions N
        i, n = parse_shard(shard)
        if opts.partition is not None or (opts.partitions is not None and opts.partitions != n):
            fail(f"--shard {shard} names partition {i} of {n}; give either --shard or --partition/--partitions")
        opts.partition, opts.partitions = str(i), n
    for given, name, why in ((ann, "--ann", "build it afterwards with `zscir index ann OUT/part-*`"),
                             (hash_content or None, "--hash", "a partition is embedded once, never updated"),
                             (overwrite or None, "--overwrite", "choose a new --out instead")):
        if given:
            fail(f"{name} is not for a partitioned run ({why})")


def job_source_options(given: dict | None) -> dict:
    """The source options that were set (a source refuses an option it does not take only when it is set)."""
    return {k: v for k, v in (given or {}).items() if v not in (None, False)}


def is_collection_spec(spec: str) -> bool:
    """WebDataset shards or a table (not a folder): such a source is indexed in partitions."""
    from zscir.index.table_source import is_table_spec
    from zscir.index.wds_index_source import is_shard_spec

    return is_shard_spec(spec) or is_table_spec(spec)


def run_partitioned(source: str, out: Path, opts: PartitionOptions, *, source_options: dict | None = None, model: str | None, methods: list[str] | None,
                    checkpoint: str | None, device: str, batch_size: int, fp16: bool, limits, threads: int | None,
                    report: Path | None, throttle: float = 0.0) -> None:
    """Plan, claim OUT, embed the pending partitions with the chosen engine, and say what is left."""
    from zscir.backbones import DEFAULT_MODEL
    from zscir.index.folder import IndexLockedError
    from zscir.index.partitions import EngineError, PartitionJob, parse_partition, run_partitions, slurm_partition
    from zscir.index.shards import PLAN_FILE
    from zscir.index.sources import SourceError
    from zscir.index.store import StoreError

    engine = opts.engine or "local"
    plan = {}
    try:
        plan = json.loads((out / PLAN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    plan = plan if isinstance(plan, dict) else {}
    n = opts.partitions if opts.partitions is not None else plan.get("partitions")
    try:
        if engine == "ray":
            from zscir.index.ray_engine import import_ray

            import_ray()  # before any model load
        if n is None:
            from zscir.index.sources import open_index_source

            n = open_index_source(str(source), **job_source_options(source_options)).default_partitions()
        job = PartitionJob(str(source), str(out), int(n) if isinstance(n, int) else n,
                           methods=tuple(methods or plan.get("methods") or ["sum"]),
                           model=model or plan.get("model") or DEFAULT_MODEL, checkpoint=checkpoint, device=device,
                           batch_size=batch_size, fp16=fp16, limits=limits, torch_threads=threads, throttle_s=throttle,
                           source_options=job_source_options(source_options))
        only = None
        if opts.partition is not None:
            only = [parse_partition(opts.partition, job.partitions)]
        elif (slurm := slurm_partition(job.partitions)) is not None:
            only = [slurm]
        if engine == "local" and (opts.jobs or 1) == 1:
            from zscir.threads import use_threads

            use_threads("batch", threads)  # this process embeds: the same thread choice as `zscir index`
        rep = run_partitions(job, engine=engine, jobs=opts.jobs or 1, only=only, ray_address=opts.ray_address)
    except (StoreError, SourceError, ValueError, ImportError, OSError, IndexLockedError, EngineError) as e:
        fail(str(e))
    if report:
        write_output(report, json.dumps(rep.as_dict(), indent=2) + "\n")
    typer.echo(f"{printable(str(out))}: embedded {len(rep.embedded)} partition(s) of {rep.partitions} "
               f"({rep.indexed} images, skipped {rep.skipped}); {len(rep.already_done)} already done")
    if rep.complete:
        typer.echo(f"all {rep.partitions} partitions done: search with `zscir search {printable(str(out))}`")
    else:
        typer.echo(f"{len(rep.missing)} partition(s) still to embed (e.g. {rep.missing[0]}); re-run without "
                   f"--partition, or run them as array tasks")
