"""A short, bounded loopback load test: 500 mixed requests at concurrency 8, zero 5xx, p50/p99 reported.

Set ``ZSCIR_LOAD_MODEL`` to measure another backbone (default: the tiny test model). The latencies are
written to ``serve-load.json`` in the artefact folder (``$ZSCIR_TEST_ARTIFACTS`` or a pytest temp folder;
the path is printed).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from test_serve_api import running_server, served_index, small_limits

N_REQUESTS, CONCURRENCY = 500, 8
#: the backbone under load; ZSCIR_LOAD_MODEL=world-clip measures the shipped model instead of the tiny one
LOAD_MODEL = os.environ.get("ZSCIR_LOAD_MODEL", "tiny-clip-test")


def artefact_dir(tmp_path_factory) -> Path:
    d = Path(os.environ.get("ZSCIR_TEST_ARTIFACTS") or tmp_path_factory.mktemp("artefacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_load_500_requests_concurrency_8(tmp_path_factory):
    from zscir.serve import ServeConfig, create_app

    tmp = tmp_path_factory.mktemp("load")
    _, _, retriever, ids = served_index(tmp, n=48, model=LOAD_MODEL)
    texts = ["make it red", "the same but darker", "add a square", "more blue", ""]

    def request(client: httpx.Client, i: int) -> tuple[str, int, float]:
        t0 = time.perf_counter()
        kind = ("search", "search", "search", "search", "thumb", "items", "bad")[i % 7]
        if kind == "search":
            text = texts[i % len(texts)]  # no text: the server picks the image method (a named one needs a text)
            r = client.post("/search", data={"text": text, "k": str(1 + i % 20), "item_id": ids[i % len(ids)],
                                             **({"method": ("sum", "image", "text")[i % 3]} if text else {})})
        elif kind == "thumb":
            r = client.get(f"/items/{ids[i % len(ids)].replace('/', '%2F')}/thumbnail")
        elif kind == "items":
            r = client.get("/items", params={"offset": i % 40, "limit": 20})
        else:  # invalid requests must stay 4xx under load too
            r = client.post("/search", data={"text": "x", "k": "999", "item_id": ids[0]})
        return kind, r.status_code, (time.perf_counter() - t0) * 1000

    with running_server(create_app(retriever, ServeConfig(limits=small_limits()))) as url:
        with httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=CONCURRENCY)) as client:
            request(client, 0)  # warm-up (lazy searcher creation) outside the measurement
            t0 = time.perf_counter()
            with ThreadPoolExecutor(CONCURRENCY) as pool:
                results = list(pool.map(lambda i: request(client, i), range(N_REQUESTS)))
            wall = time.perf_counter() - t0
    statuses = [s for _, s, _ in results]
    assert len(results) == N_REQUESTS
    assert not [s for s in statuses if s >= 500], "5xx under load"
    assert all(s == 200 for k, s, _ in results if k != "bad") and all(s == 422 for k, s, _ in results if k == "bad")
    lat = np.array([ms for _, _, ms in results])
    search_lat = np.array([ms for k, _, ms in results if k == "search"])
    summary = {"requests": N_REQUESTS, "concurrency": CONCURRENCY, "wall_s": round(wall, 2),
               "throughput_rps": round(N_REQUESTS / wall, 1),
               "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
               "search_p50_ms": round(float(np.percentile(search_lat, 50)), 1),
               "search_p99_ms": round(float(np.percentile(search_lat, 99)), 1),
               "status_counts": {str(s): statuses.count(s) for s in sorted(set(statuses))},
               "model": LOAD_MODEL, "gallery_items": len(ids)}
    out = artefact_dir(tmp_path_factory) / "serve-load.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nload test: {json.dumps(summary)}\nwritten to {out}")
