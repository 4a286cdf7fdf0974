"""How many threads torch (and FAISS) use: one owner for the choice, so no command oversubscribes the CPU.

Why this matters: torch's default is one intra-op thread per core, and its OpenMP threads spin-wait at
every barrier. On a machine where other processes also want the cores, a parallel region then waits for a
thread that is not running, and work collapses: a single search took 1-2 s instead of 30 ms, a training
step 24x longer than with one thread. So zscir chooses the count itself:

* ``query`` (one search, one request of the server): **one** thread. Encoding one image and one text and
  scanning the gallery once is small and memory-bound; more threads only add synchronisation.
* ``batch`` (training, indexing, evaluation, rendering): the cores this process may use
  (`usable_cores`: CPU affinity and the cgroup CPU quota) that are idle now (`idle_cores`, sampled from
  ``/proc/stat`` for a fifth of a second), shared among the processes of a ``torchrun`` launch on this
  machine, capped by torch's own default; at least one.

The count is chosen when a command starts; load that arrives later is not followed. Results computed with
different thread counts may differ in the last bits (reduction order), so a run records its count and
``--threads N`` repeats it exactly.

An explicit choice always wins: ``--threads N`` of a command (``requested``), else ``OMP_NUM_THREADS``
when set. ``--threads 0`` leaves torch's default (the behaviour before this module). Every command that
runs torch applies its choice through `use_threads` and records the returned `ThreadChoice` in its results
(index manifest, eval JSON, train log). The Python API's searches run under `query_threads`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

logger = logging.getLogger(__name__)

KINDS = ("query", "batch")
#: the help text of every command's ``--threads`` option
THREADS_HELP = ("torch threads (default: 1 for a single query; for batched work the usable cores that are idle "
                "now; 0 = torch's own default).")
#: never more batch threads than this, whatever the machine reports
MAX_BATCH_THREADS = 32
#: how long `idle_cores` watches ``/proc/stat``, and how long a measurement is reused in one process
IDLE_SAMPLE_S = 0.2
IDLE_REUSE_S = 300.0
#: a core counts as idle when at least this share of it was idle during the sample
IDLE_SHARE = 0.8

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count a command uses and why (recorded in its results)."""

    threads: int | None  #: torch intra-op threads; None = torch's own default was left alone (``--threads 0``)
    kind: str  #: "query" or "batch"
    source: str  #: "--threads", "OMP_NUM_THREADS", "default"
    usable_cores: int
    idle_cores: float | None = None  #: measured for a default batch choice

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------- the machine
def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except (OSError, ValueError):
        return None


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """(cgroup v2 path, cgroup v1 path of the ``cpu`` controller) of this process, from /proc/self/cgroup."""
    v2 = v1 = None
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        if hier == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _ancestors(base: Path, rel: str | None) -> list[Path]:
    """``base/rel`` and every folder above it up to ``base`` (a parent's limit applies to its children)."""
    out = [base]
    if rel:
        cur = base
        for part in [p for p in rel.split("/") if p and p not in (".", "..")]:
            cur = cur / part
            out.append(cur)
    return out


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in cores (``1.5`` = 150 ms per 100 ms), or None without one.

    cgroup v2 ``cpu.max`` ("max 100000" or "150000 100000") and v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us`` (-1 = none), read for the process's cgroup and every ancestor; the smallest wins.
    Unreadable or malformed files count as no limit: this is a hint, never an error.
    """
    v2, v1 = _cgroup_paths(proc_cgroup)
    limits: list[float] = []
    for d in _ancestors(root, v2):
        text = _read(d / "cpu.max")
        if text is None:
            continue
        fields = text.split()
        if len(fields) >= 2 and fields[0] != "max":
            try:
                quota, period = float(fields[0]), float(fields[1])
            except ValueError:
                continue
            if quota > 0 and period > 0 and math.isfinite(quota / period):
                limits.append(quota / period)
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for d in _ancestors(root / mount, v1):
            q, p = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
            if q is None or p is None:
                continue
            try:
                quota, period = float(q.strip()), float(p.strip())
            except ValueError:
                continue
            if quota > 0 and period > 0 and math.isfinite(quota / period):
                limits.append(quota / period)
    return min(limits) if limits else None


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return set(range(os.cpu_count() or 1))


def usable_cores(affinity: set[int] | None = None, root: Path = CGROUP_ROOT,
                 proc_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """The cores this process may use: its CPU affinity, reduced to the cgroup quota (rounded down); >= 1."""
    cores = len(_affinity() if affinity is None else affinity) or 1
    quota = cgroup_cpu_limit(root, proc_cgroup)
    if quota is not None:
        cores = min(cores, max(1, int(quota)))
    return max(1, cores)


def _cpu_times(stat_text: str, cpus: set[int]) -> dict[int, tuple[int, int]]:
    """{cpu: (idle jiffies, total jiffies)} of the per-CPU lines of /proc/stat, for ``cpus``."""
    out = {}
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            cpu = int(name[3:])
            vals = [int(v) for v in rest.split()[:8]]
        except ValueError:
            continue
        if cpu in cpus and len(vals) >= 5:
            out[cpu] = (vals[3] + vals[4], sum(vals))  # idle + iowait, of user..steal
    return out


_idle_cache: tuple[float, float] | None = None  # (monotonic time, idle cores)
_idle_lock = threading.Lock()


def idle_cores(sample_s: float = IDLE_SAMPLE_S, stat: Path = PROC_STAT, affinity: set[int] | None = None,
               reuse_s: float = IDLE_REUSE_S) -> float | None:
    """How many of this process's CPUs were idle during the last ``sample_s`` seconds (None: unknown).

    Read from two snapshots of ``/proc/stat`` (per-CPU idle + iowait time), over the CPUs of the affinity
    mask only. A measurement is reused for ``reuse_s`` seconds, so a process that starts many jobs (the
    tests, the benchmark suite) does not sleep before each.
    """
    global _idle_cache
    with _idle_lock:
        now = time.monotonic()
        if reuse_s > 0 and _idle_cache is not None and now - _idle_cache[0] < reuse_s:
            return _idle_cache[1]
        cpus = _affinity() if affinity is None else affinity
        first = _read(stat)
        if first is None:
            return None
        time.sleep(max(0.0, sample_s))
        second = _read(stat)
        if second is None:
            return None
        a, b = _cpu_times(first, cpus), _cpu_times(second, cpus)
        idle = 0.0
        seen = False
        for cpu, (i1, t1) in b.items():
            if cpu not in a:
                continue
            di, dt = i1 - a[cpu][0], t1 - a[cpu][1]
            if dt > 0:
                idle += min(1.0, max(0.0, di / dt))
                seen = True
        if not seen:
            return None
        _idle_cache = (now, idle)
        return idle


def forget_idle_measurement() -> None:
    """Measure again at the next `idle_cores` call (the benchmark does this when it starts busy processes)."""
    global _idle_cache
    with _idle_lock:
        _idle_cache = None


# ------------------------------------------------------------------------------------------- the choice
def _env_threads() -> int | None:
    raw = os.environ.get("OMP_NUM_THREADS", "").strip()
    try:
        n = int(raw.split(",")[0])
    except ValueError:
        return None
    return n if n >= 1 else None


def local_processes() -> int:
    """Processes of this launch on this machine (torchrun's ``LOCAL_WORLD_SIZE``, else ``WORLD_SIZE``), >= 1."""
    for var in ("LOCAL_WORLD_SIZE", "WORLD_SIZE"):
        try:
            n = int(os.environ.get(var, "").strip())
        except ValueError:
            continue
        if n >= 1:
            return n
    return 1


_torch_default: int | None = None  # torch's intra-op count before zscir changed it


def torch_default_threads() -> int | None:
    """torch's own default intra-op thread count (its count of cores), or None when torch is not loaded."""
    global _torch_default
    if _torch_default is None and "torch" in sys.modules:
        _torch_default = int(sys.modules["torch"].get_num_threads())
    return _torch_default


def choose_threads(kind: str, requested: int | None = None, *, usable: int | None = None,
                   idle: float | None = None, measure_idle: bool = True, cap: int | None = None) -> ThreadChoice:
    """The thread count for ``kind`` ("query" or "batch"); ``requested`` (``--threads``) always wins.

    ``usable`` / ``idle`` / ``cap`` override the measurements and torch's default (tests);
    ``measure_idle=False`` skips sampling ``/proc/stat`` and uses every usable core for a batch.
    """
    if kind not in KINDS:
        raise ValueError(f"thread kind must be one of {', '.join(KINDS)}, got {kind!r}")
    usable = usable_cores() if usable is None else max(1, int(usable))
    if requested is not None:
        if int(requested) < 0:
            raise ValueError(f"--threads must be 0 (torch's default) or a positive number, got {requested}")
        return ThreadChoice(int(requested) or None, kind, "--threads", usable)
    env = _env_threads()
    if env is not None:
        return ThreadChoice(env, kind, "OMP_NUM_THREADS", usable)
    if kind == "query":
        return ThreadChoice(1, kind, "default", usable)
    if idle is None and measure_idle and usable > 1:
        idle = idle_cores()
    n = usable
    if idle is not None:
        n = min(n, int(idle + (1.0 - IDLE_SHARE)))  # a core counts when >= 80 % of it was idle
    n //= local_processes()  # data-parallel processes on this machine share the cores
    cap = cap or torch_default_threads() or MAX_BATCH_THREADS
    n = max(1, min(n, cap, MAX_BATCH_THREADS))
    return ThreadChoice(n, kind, "default", usable, None if idle is None else round(idle, 2))


_pinned: int | None = None  # a count the user asked for (--threads, OMP_NUM_THREADS): query_threads keeps it


def apply_threads(n: int | None) -> int:
    """Set torch's intra-op threads to ``n`` (and FAISS's, when FAISS is loaded); None leaves torch's own
    default. Returns the count torch now uses."""
    import torch

    torch_default_threads()  # remember torch's own count before the first change
    if n is not None:
        if torch.get_num_threads() != n:
            torch.set_num_threads(int(n))
        faiss = sys.modules.get("faiss")
        if faiss is not None and hasattr(faiss, "omp_set_num_threads"):
            faiss.omp_set_num_threads(int(n))
    return int(torch.get_num_threads())


def use_threads(kind: str, requested: int | None = None, **kw: Any) -> ThreadChoice:
    """`choose_threads` and `apply_threads` in one: what a command calls before it runs torch."""
    global _pinned
    import torch  # noqa: F401 - loaded first, so that torch's own default caps a batch choice

    torch_default_threads()
    choice = choose_threads(kind, requested, **kw)
    got = apply_threads(choice.threads)
    if choice.source != "default":
        _pinned = got
    logger.info("torch threads: %d (%s, %s; %d usable cores, idle %s)", got, choice.kind, choice.source,
                choice.usable_cores, choice.idle_cores)
    return ThreadChoice(got if choice.threads is not None else None, choice.kind, choice.source,
                        choice.usable_cores, choice.idle_cores)


def reset_pinned() -> None:
    """Forget a count set by ``--threads`` (tests run many commands in one process)."""
    global _pinned
    _pinned = None


@contextlib.contextmanager
def query_threads(requested: int | None = None) -> Iterator[int]:
    """Run one query with ``requested`` threads (default: a count the user pinned, else `choose_threads`
    for "query", i.e. one), and restore the previous count afterwards.

    For the Python API (`zscir.index.retriever.Retriever`): a program that imports zscir keeps its own
    thread setting for everything else it does.
    """
    import torch

    n = requested if requested is not None else (_pinned if _pinned is not None else
                                                 choose_threads("query", usable=1).threads)
    before = torch.get_num_threads()
    change = n is not None and n >= 1 and n != before
    if change:
        torch.set_num_threads(int(n))
    try:
        yield torch.get_num_threads()
    finally:
        if change:
            torch.set_num_threads(before)
