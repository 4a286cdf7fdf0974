"""Child process of tests/test_serve_memory.py: serve an index with uvicorn on a given loopback port.

Run as ``python tests/serve_memory_child.py INDEX_DIR PORT`` so the parent can read this process's peak
resident size from /proc/<pid>/status (VmHWM) while it uploads large images.
"""

from __future__ import annotations

import sys

import torch
import uvicorn

from zscir.index.retriever import Retriever
from zscir.serve import ServeConfig, create_app

if __name__ == "__main__":
    torch.set_num_threads(1)
    index_dir, port = sys.argv[1], int(sys.argv[2])
    retriever = Retriever.load(index_dir)
    app = create_app(retriever, ServeConfig())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
