"""Shared fixtures: tiny random backbones (cached per session) and a small world benchmark."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

#: a small world benchmark for end-to-end tests (the default one is 1800 + 2928 images)
SMALL_WORLD = dict(n_cirr_sets=20, queries_per_set=2, n_circo_queries=12, n_circo_distractors=60, n_pairs=3000,
                   n_triplets=2000)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep test caches (world benchmarks, features) out of the user's ~/.cache."""
    if "ZSCIR_CACHE" not in os.environ:
        os.environ["ZSCIR_CACHE"] = str(tmp_path_factory.mktemp("zscir-cache"))
    yield


@pytest.fixture(scope="session")
def tiny_backbone():
    from zscir.backbones import create_backbone

    return create_backbone("tiny-clip-test")


@pytest.fixture(scope="session")
def small_world_root():
    from zscir.data.world.cache import ensure_world_benchmark

    return ensure_world_benchmark(0, **SMALL_WORLD)


def shipped(name: str) -> Path:
    from zscir.backbones.registry import shipped_model_dir

    return shipped_model_dir(name)
