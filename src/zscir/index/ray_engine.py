"""The Ray engine of partitioned indexing: Ray Data ``map_batches`` over a pool of model-holding actors.

Why this layout: the partition (:mod:`zscir.index.partitions`) stays the unit of work *and* of retry. The
dataset is the list of pending partition ids; ``map_batches`` hands each actor one id at a time
(``batch_size=1``), and the actor embeds and publishes that whole partition with the model it loaded once.
A worker that dies mid-partition loses only its private work folder: Ray restarts the actor
(Ray Data's actor pools default to ``max_restarts=-1`` and ``max_task_retries=-1``) and retries the call,
and the retry redoes the partition from the start. A dead driver or Ctrl-C loses nothing either: the next run skips every partition with a done marker.

Actors take one GPU each when the cluster has GPUs (``num_gpus=1``; the model goes to the device Ray
assigned, via :func:`zscir.backbones.devices.resolve_device`), one CPU otherwise. Ray is an optional extra
and is imported only here, only when ``--engine ray`` is asked for.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Sequence

from zscir.index.partitions import EngineError, PartitionJob, PartitionResult, composers_for, embed_partition

logger = logging.getLogger(__name__)

__all__ = ["import_ray", "run_ray", "run_engine", "worker_error", "PartitionActor"]


def import_ray() -> Any:
    """``ray`` (with Ray Data), or one ImportError line saying how to install the extra."""
    try:
        import ray
        import ray.data  # noqa: F401 - the extra is ray[data]
    except ImportError as e:
        from zscir.extras import install_hint

        raise ImportError(f"--engine ray needs Ray Data ({e}); install it with {install_hint('ray')}") from None
    return ray


class PartitionActor:
    """One Ray actor: one model, embedding whole partitions (``map_batches`` batches of one id)."""

    def __init__(self, job: PartitionJob, pid_dir: str | None = None):
        if job.torch_threads:
            import torch

            torch.set_num_threads(job.torch_threads)
        self.job = job
        device = job.device
        if device == "auto":  # Ray sets CUDA_VISIBLE_DEVICES to the GPU it gave this actor
            from zscir.backbones.devices import resolve_device

            device = str(resolve_device("auto"))
        self.composers = composers_for(job, device)
        self.source = job.open_source()
        if pid_dir:  # tests: where to find this worker's process to kill it
            with open(os.path.join(pid_dir, f"actor-{os.getpid()}.pid"), "w", encoding="utf-8") as f:
                f.write(str(os.getpid()))

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        results = [embed_partition(self.job, int(i), self.composers, self.source) for i in batch["partition"]]
        return {"partition": [r.partition for r in results], "indexed": [r.indexed for r in results],
                "skipped": [r.skipped for r in results], "already_done": [r.already_done for r in results],
                "seconds": [r.seconds for r in results], "pid": [r.pid for r in results]}


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAISED = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Rejected)): (.+)$")


def worker_error(exc: BaseException) -> str:
    """The worker's own ``Type: message`` line out of Ray's wrapped exception (the last one in its text)."""
    text = _ANSI.sub("", str(exc))
    for line in reversed(text.splitlines()):
        m = _RAISED.match(line.strip())
        if m and not m.group(1).startswith(("ray.", "Ray")):
            return f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2)}"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return first[:300]


def _gpus(ray: Any, num_gpus: float | None) -> float:
    if num_gpus is not None:
        return float(num_gpus)
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def run_ray(job: PartitionJob, todo: Sequence[int], *, actors: int = 1, address: str | None = None,
            num_gpus: float | None = None, pid_dir: str | None = None) -> list[PartitionResult]:
    """Embed the partitions ``todo`` on Ray: ``actors`` actors, each one model (one GPU each where there are).

    ``address``: the cluster (``ray://…`` or ``host:port``); None: ``RAY_ADDRESS``, else a Ray that this call
    starts locally and stops again. ``num_gpus`` per actor: None picks 1 when the cluster has GPUs, else 0.
    """
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
        started = True
    try:
        gpus = _gpus(ray, num_gpus)
        if gpus > 0 and job.device == "cpu":
            job = PartitionJob(**{**job.__dict__, "device": "auto"})
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items([{"partition": int(i)} for i in todo], override_num_blocks=len(todo))
        pool = ray.data.ActorPoolStrategy(size=max(1, min(int(actors), len(todo))), max_tasks_in_flight_per_actor=1)
        # Ray Data restarts a dead actor and retries its call by default (max_restarts / max_task_retries -1)
        out = ds.map_batches(PartitionActor, fn_constructor_kwargs={"job": job, "pid_dir": pid_dir}, batch_size=1,
                             compute=pool, num_gpus=gpus, num_cpus=0 if gpus else 1, batch_format="numpy")
        try:
            rows = out.take_all()
        except Exception as e:  # noqa: BLE001 - a worker's error arrives wrapped in Ray's exceptions
            raise EngineError(f"--engine ray: a worker failed: {worker_error(e)} (the partitions done so far "
                              f"are kept; a re-run embeds the rest)") from e
    finally:
        if started:
            ray.shutdown()
    results = [PartitionResult(int(r["partition"]), indexed=int(r["indexed"]), skipped=int(r["skipped"]),
                               already_done=bool(r["already_done"]), seconds=float(r["seconds"]), pid=int(r["pid"]))
               for r in rows]
    logger.info("ray: %d partitions embedded by %d actor processes", len(results), len({r.pid for r in results}))
    return results


#: the entry point `zscir.index.partitions.run_partitions` calls for ``engine="ray"``
run_engine = run_ray
