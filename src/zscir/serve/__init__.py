"""`zscir serve`: an HTTP API and a web page for composed search over an index.

`create_app(retriever)` builds the FastAPI app (routes in `zscir.serve.app`, request limits in
`zscir.serve.limits`); `ensure_world_gallery` provides the built-in demo gallery. FastAPI, uvicorn and
python-multipart come with the ``[serve]`` extra, so importing this package needs them.
"""

from zscir.serve.app import ServeConfig, create_app
from zscir.serve.limits import ServeLimits

__all__ = ["create_app", "ServeConfig", "ServeLimits"]
