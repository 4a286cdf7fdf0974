"""The on-disk IVF index (``zscir.index.ondisk``) at millions of vectors: build time, peak RSS, disk, recall, latency.

``python -m benchmarks ondisk [--n 5000000] [--d 512] [--work /tmp/ivfbench/run] [--out runs/bench]``

Not a default item of the suite (it runs for tens of minutes at 5M on two cores). Each phase runs in its
own child process so that its peak RSS is its own (``VmHWM``, and the peak anonymous memory sampled every
0.2 s by the parent): data (writes the fp16 gallery the PQ index re-ranks from, and the exact top-10 of
the queries by streaming), then per kind train / add (partition by partition) / merge / search.

Synthetic data that resembles embeddings: a seeded mixture of ``--clusters`` anisotropic Gaussian clusters
(Zipf-like sizes, per-cluster per-axis scales) in a 64-d subspace of R^d, plus isotropic noise, then
L2-normalised. An IVF on isotropic noise has no cells to find, so its recall there says nothing. Blocks
are generated deterministically from ``(seed, stream, block number)``, so the gallery is never held in
memory and the ground truth is computed by streaming it once. Queries and the training sample are fresh
draws from the same distribution (other streams), not gallery rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

logger = logging.getLogger(__name__)

KINDS = ("ivfpq-ondisk", "ivfsq8-ondisk")
BLOCK = 65_536
LATENT = 64


class Synth:
    """The embedding-like distribution (see the module docstring); ``block(stream, i)`` is deterministic."""

    def __init__(self, d: int, clusters: int = 4096, seed: int = 0, noise: float = 0.35):
        rng = np.random.default_rng([seed, 7])
        self.d, self.seed, self.noise = d, seed, noise
        self.basis = np.linalg.qr(rng.standard_normal((d, LATENT)))[0].T.astype(np.float32) * np.sqrt(d / LATENT)
        self.centers = rng.standard_normal((clusters, LATENT)).astype(np.float32)
        self.scales = (0.45 * np.exp(0.5 * rng.standard_normal((clusters, LATENT)))).astype(np.float32)
        w = 1.0 / np.arange(1, clusters + 1) ** 0.7
        self.p = w / w.sum()

    def rows(self, stream: int, i: int, rows: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, stream, i])
        c = rng.choice(len(self.p), rows, p=self.p)
        z = self.centers[c] + rng.standard_normal((rows, LATENT), dtype=np.float32) * self.scales[c]
        x = z @ self.basis + rng.standard_normal((rows, self.d), dtype=np.float32) * self.noise
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def base(self, n: int) -> Iterator[np.ndarray]:
        for i, s in enumerate(range(0, n, BLOCK)):
            yield self.rows(1, i, min(BLOCK, n - s))


def _vm(pid: int | str = "self") -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


# ------------------------------------------------------------------------------------------ phases
def phase_data(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    from zscir.index.ondisk import exact_topk_stream

    syn = Synth(a.d, a.clusters, a.seed)
    q = syn.rows(2, 0, a.queries + a.tune_queries)
    np.save(work / "queries.npy", q)
    store = work / "gallery-f16.npy"
    mm = np.lib.format.open_memmap(store, mode="w+", dtype=np.float16, shape=(a.n, a.d))
    offset = mm.offset
    del mm
    t0 = time.perf_counter()
    with open(store, "r+b") as f:
        f.seek(offset)

        def written() -> Iterator[np.ndarray]:
            for blk in syn.base(a.n):
                f.write(blk.astype(np.float16).tobytes())
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # keep the page cache for others
                for s in range(0, len(blk), 8192):  # bounds the (queries x rows) score matrix
                    yield blk[s:s + 8192]

        _, gt = exact_topk_stream(q, written(), a.k)
    np.save(work / "gt.npy", gt)
    return {"gen_gt_s": time.perf_counter() - t0, "store_bytes": store.stat().st_size}


def phase_train(a: argparse.Namespace, work: Path, kind: str) -> dict[str, Any]:
    import faiss

    from zscir.index.ondisk import choose_plan, train_empty

    plan = choose_plan(a.n, a.d, kind, a.memory_budget, nlist=a.nlist or None)
    syn = Synth(a.d, a.clusters, a.seed)
    sample = np.concatenate([syn.rows(3, i, min(BLOCK, plan.n_train - s))
                             for i, s in enumerate(range(0, plan.n_train, BLOCK))])
    t0 = time.perf_counter()
    index = train_empty(sample, plan)
    dt = time.perf_counter() - t0
    faiss.write_index(index, str(work / f"{kind}.trained.faiss"))
    return {"train_s": dt, "plan": plan.to_dict(), "sample_bytes": int(sample.nbytes)}


def _plan(a: argparse.Namespace, kind: str) -> Any:
    from zscir.index.ondisk import choose_plan

    return choose_plan(a.n, a.d, kind, a.memory_budget, nlist=a.nlist or None)


def phase_add(a: argparse.Namespace, work: Path, kind: str) -> dict[str, Any]:
    import faiss

    from zscir.index.ondisk import fill_partitions, ondisk_file_names

    plan = _plan(a, kind)
    trained = faiss.read_index(str(work / f"{kind}.trained.faiss"))
    _, _, parts = ondisk_file_names(kind, plan.partitions)
    t0 = time.perf_counter()
    written = fill_partitions(trained, stored_blocks(work / "gallery-f16.npy"), plan, work, parts)
    return {"add_s": time.perf_counter() - t0, "partitions": written,
            "source": "gallery-f16.npy (plain reads, one block at a time)"}


def stored_blocks(path: Path) -> Iterator[np.ndarray]:
    """The gallery as the add phase of a real index reads it: fp16 rows of a memory-mapped store, one fp32
    block at a time (what `zscir index ann` does with an index folder). Generating the vectors in this
    process instead would add the generator's temporaries (several 128 MB arrays per block) to the add
    phase's peak, which is not the index's memory. The rows are read with plain reads into one buffer, not
    through a mapping: mapped pages would stay in this process's RSS (clean page cache, but counted), and
    pages already read are dropped from the page cache."""
    mm = np.load(path, mmap_mode="r")
    n, d, offset = mm.shape[0], mm.shape[1], mm.offset
    del mm
    buf = np.empty((BLOCK, d), dtype=np.float16)
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        for s in range(0, n, BLOCK):
            rows = min(BLOCK, n - s)
            view = memoryview(buf[:rows]).cast("B")
            got = 0
            while got < len(view):
                k = f.readinto(view[got:])
                if not k:
                    raise ValueError(f"{path}: ends at row {s + got // (2 * d)} of {n}")
                got += k
            yield buf[:rows].astype(np.float32)
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def phase_merge(a: argparse.Namespace, work: Path, kind: str) -> dict[str, Any]:
    import faiss

    from zscir.index.ondisk import merge_partitions, ondisk_file_names

    plan = _plan(a, kind)
    trained = faiss.read_index(str(work / f"{kind}.trained.faiss"))
    index_name, data_name, parts = ondisk_file_names(kind, plan.partitions)
    t0 = time.perf_counter()
    merge_partitions(trained, work, [p for p in parts if (work / p).exists()], index_name, data_name)
    dt = time.perf_counter() - t0
    part_bytes = sum((work / p).stat().st_size for p in parts if (work / p).exists())
    for p in parts:
        (work / p).unlink(missing_ok=True)
    return {"merge_s": dt, "partition_bytes": part_bytes, "index_bytes": (work / index_name).stat().st_size,
            "ivfdata_bytes": (work / data_name).stat().st_size}


def _recall(ids: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([len(set(r.tolist()) & set(t.tolist())) / len(t) for r, t in zip(ids, gt)]))


def _evict(path: Path) -> None:
    """Drop ``path`` from the page cache (POSIX_FADV_DONTNEED: only clean pages of this file; no root)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def phase_search(a: argparse.Namespace, work: Path, kind: str) -> dict[str, Any]:
    import faiss

    from zscir.index.faiss_search import AnnSearcher
    from zscir.index.ondisk import ondisk_file_names, open_ondisk, tune_nprobe

    faiss.omp_set_num_threads(1)
    index_name, data_name, _ = ondisk_file_names(kind, 1)
    entry = {"file": index_name, "ivfdata": data_name, "ivfdata_bytes": (work / data_name).stat().st_size}
    q_all = np.load(work / "queries.npy")
    gt_all = np.load(work / "gt.npy")
    q, gt = q_all[:a.queries], gt_all[:a.queries]
    qt, gtt = q_all[a.queries:], gt_all[a.queries:]
    store = np.load(work / "gallery-f16.npy", mmap_mode="r")
    t0 = time.perf_counter()
    index = open_ondisk(work, entry, count=a.n, dim=a.d)
    open_s = time.perf_counter() - t0
    truth = np.asarray(store[np.sort(gtt.ravel())], np.float32)[np.argsort(np.argsort(gtt.ravel()))]
    nprobe, curve = tune_nprobe(index, qt, truth.reshape(len(qt), a.k, a.d), target=a.cell_target)
    out: dict[str, Any] = {"open_s": open_s, "nprobe": nprobe, "cell_recall": curve}
    rerank = "store" if kind == "ivfpq-ondisk" else "none"  # SQ8 codes are near exact: no re-rank reads
    for mode in ("none", "store"):
        s = AnnSearcher(index, store, nprobe=nprobe, k_factor=a.k_factor, rerank=mode)
        out[f"recall@{a.k}_{mode}"] = _recall(s.search(q, a.k)[1], gt)
    served = AnnSearcher(index, store, nprobe=nprobe, k_factor=a.k_factor, rerank=rerank)
    out["served_rerank"] = rerank
    n_lat = min(a.latency_queries, len(q))
    for label in ("cold", "warm"):
        if label == "cold":  # the index's lists and the gallery evicted from the page cache first
            _evict(work / data_name)
            _evict(work / "gallery-f16.npy")
        lat = []
        for i in range(n_lat):
            t = time.perf_counter()
            served.search(q[i:i + 1], a.k)
            lat.append((time.perf_counter() - t) * 1e3)
        out[f"latency_ms_{label}"] = {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                                      "mean": float(np.mean(lat))}
    return out


PHASES = {"data": phase_data, "train": phase_train, "add": phase_add, "merge": phase_merge, "search": phase_search}


# ------------------------------------------------------------------------------------------ driver
def _child(argv: list[str]) -> int:
    a = _parser().parse_args(argv)
    import faiss

    from zscir.index.ondisk import parse_size

    a.memory_budget = parse_size(a.memory_budget)
    faiss.omp_set_num_threads(a.build_threads)
    work = Path(a.work)
    res = PHASES[a.phase](a, work) if a.phase == "data" else PHASES[a.phase](a, work, a.kind)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    res.update(vm_end=_vm(), ru_maxrss=ru.ru_maxrss * 1024, cpu_s=ru.ru_utime + ru.ru_stime)
    Path(a.result).write_text(json.dumps(res))
    return 0


def _run_phase(argv: list[str], phase: str, kind: str | None, work: Path) -> dict[str, Any]:
    result = work / f"result-{phase}-{kind or 'all'}.json"
    cmd = [sys.executable, "-m", "benchmarks.ondisk", "--child", *argv, "--phase", phase, "--result", str(result)]
    if kind:
        cmd += ["--kind", kind]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak_anon = peak_rss = 0
    while proc.poll() is None:
        vm = _vm(proc.pid)
        peak_anon = max(peak_anon, vm.get("RssAnon", 0))
        peak_rss = max(peak_rss, vm.get("VmHWM", 0))
        time.sleep(0.2)
    if proc.returncode:
        raise SystemExit(f"phase {phase} {kind or ''} failed with exit status {proc.returncode}")
    res = json.loads(result.read_text())
    res.update(wall_s=time.perf_counter() - t0, peak_anon_sampled=peak_anon,
               peak_rss=max(peak_rss, res.get("ru_maxrss", 0)))
    logger.info("%s %s: %.1f s, peak RSS %.0f MB (anonymous %.0f MB)", phase, kind or "", res["wall_s"],
                res["peak_rss"] / 2**20, peak_anon / 2**20)
    return res


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks ondisk", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5_000_000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--tune-queries", type=int, default=256, help="held-out queries that choose nprobe")
    p.add_argument("--latency-queries", type=int, default=300)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--k-factor", type=int, default=16, help="PQ: candidates re-ranked from the gallery = k x this")
    p.add_argument("--clusters", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--memory-budget", default="1.5GB")
    p.add_argument("--nlist", type=int, default=0, help="0: the chooser's 4 sqrt(N) (bounded by the sample)")
    p.add_argument("--cell-target", type=float, default=0.95, help="cell recall that chooses nprobe")
    p.add_argument("--build-threads", type=int, default=2)
    p.add_argument("--work", default="/tmp/ivfbench/run", help="scratch folder (new or empty; removed after)")
    p.add_argument("--out", type=Path, default=Path("runs/bench"))
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--phase", choices=list(PHASES), help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p


def _table(res: dict[str, Any], a: argparse.Namespace, base: dict[str, Any]) -> str:
    mb = 2**20
    rows = ["| | " + " | ".join(res) + " |", "|---|" + "---|" * len(res)]

    def row(label: str, f) -> None:
        rows.append(f"| {label} | " + " | ".join(f(r) for r in res.values()) + " |")

    row("factory", lambda r: f"`{r['train']['plan']['factory']}`")
    row("training sample", lambda r: f"{r['train']['plan']['n_train']:,} ({r['train']['sample_bytes'] / mb:.0f} MB)")
    row("partitions", lambda r: str(len(r["add"]["partitions"])))
    row("train / add / merge (s)", lambda r: f"{r['train']['train_s']:.0f} / {r['add']['add_s']:.0f} / "
        f"{r['merge']['merge_s']:.0f}")
    row("build CPU time (s, all phases)", lambda r: f"{sum(r[p]['cpu_s'] for p in ('train', 'add', 'merge')):.0f}")
    for p in ("train", "add", "merge", "search"):
        row(f"peak RSS {p} (MB; anonymous)", lambda r, p=p: f"{r[p]['peak_rss'] / mb:.0f}; "
            f"{r[p]['peak_anon_sampled'] / mb:.0f}")
    row("train peak beyond sample + interpreter (MB)",
        lambda r: f"{(r['train']['peak_rss'] - r['train']['sample_bytes'] - base['peak_rss']) / mb:.0f}")
    row("add / merge peak beyond interpreter (MB)", lambda r: f"{(r['add']['peak_rss'] - base['peak_rss']) / mb:.0f} / "
        f"{(r['merge']['peak_rss'] - base['peak_rss']) / mb:.0f}")
    row("disk: .ivfdata + index (MB)", lambda r: f"{r['merge']['ivfdata_bytes'] / mb:.0f} + "
        f"{r['merge']['index_bytes'] / mb:.1f}")
    row("nprobe (tuned, cell recall)", lambda r: f"{r['search']['nprobe']} "
        f"({r['search']['cell_recall'][str(r['search']['nprobe'])]:.3f})")
    row(f"recall@{a.k}: codes only", lambda r: f"{r['search'][f'recall@{a.k}_none']:.3f}")
    row(f"recall@{a.k}: exact re-rank (k_factor {a.k_factor})", lambda r: f"{r['search'][f'recall@{a.k}_store']:.3f}")
    row("served as", lambda r: "re-rank from fp16 gallery" if r["search"]["served_rerank"] == "store" else "codes only")
    row("latency p50 / p95 cold (ms)", lambda r: f"{r['search']['latency_ms_cold']['p50']:.1f} / "
        f"{r['search']['latency_ms_cold']['p95']:.1f}")
    row("latency p50 / p95 warm (ms)", lambda r: f"{r['search']['latency_ms_warm']['p50']:.1f} / "
        f"{r['search']['latency_ms_warm']['p95']:.1f}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--child" in argv:
        return _child([x for x in argv if x != "--child"])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    a = _parser().parse_args(argv)
    from zscir.index.ondisk import parse_size

    a.memory_budget = parse_size(a.memory_budget)
    fwd = list(argv)
    work = Path(a.work)
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"{work}: not empty; give a new or empty --work folder")
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    try:
        data = _run_phase(fwd, "data", None, work)
        res: dict[str, Any] = {}
        for kind in a.kinds:
            res[kind] = {p: _run_phase(fwd, p, kind, work) for p in ("train", "add", "merge", "search")}
        base = {"peak_rss": _interpreter_rss()}
    finally:
        if not a.keep:
            for p in work.iterdir():
                p.unlink()
            work.rmdir()
    from benchmarks.common import cpu_description, machine_info

    info = machine_info()
    md = (f"## On-disk IVF index, N = {a.n:,}, d = {a.d}\n\nCommand: `python -m benchmarks ondisk "
          f"{' '.join(argv)}`  \nMachine: {cpu_description(info)}, nproc={info['nproc']}, load average at end "
          f"{os.getloadavg()}  \nBuild threads {a.build_threads}, search 1 thread; {a.queries} queries, memory "
          f"budget {a.memory_budget / 2**30:.2f} GB; data + exact top-{a.k} pass {data['wall_s']:.0f} s; "
          f"total {time.perf_counter() - t_all:.0f} s; interpreter baseline RSS "
          f"{base['peak_rss'] / 2**20:.0f} MB.\n\n{_table(res, a, base)}\n")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "ondisk.json").write_text(json.dumps({"n": a.n, "d": a.d, "data": data, "results": res,
                                                   "baseline": base, "command": argv}, indent=1))
    (a.out / "ondisk.md").write_text(md)
    print(md)
    return 0


def _interpreter_rss() -> int:
    """Peak RSS of a child that only imports what the phases import (numpy, faiss, zscir.index.ondisk)."""
    code = ("import numpy, faiss, zscir.index.ondisk, zscir.index.faiss_search, resource; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


if __name__ == "__main__":
    raise SystemExit(main())
