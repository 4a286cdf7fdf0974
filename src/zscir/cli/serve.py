"""`zscir serve [INDEX_DIR]`: the HTTP API and web page (FastAPI + uvicorn)."""

from __future__ import annotations

from pathlib import Path

import typer

from zscir.cli.common import fail, finite_positive, parse_options
from zscir.cli.options import OPTION, THREADS


def parse_method_checkpoints(specs: list[str] | None) -> dict[str, str]:
    """``--method-checkpoint METHOD=DIR`` values → ``{method: path}``; a malformed value, a method that is not
    registered or a path that does not exist fails at once with one error line."""
    if not specs:
        return {}
    from zscir.methods import list_methods

    known = [m.name for m in list_methods()]
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        name, folder = name.strip(), folder.strip()
        if not sep or not name or not folder:
            fail(f"--method-checkpoint expects METHOD=DIR, got {spec!r}")
        if name not in known:
            fail(f"--method-checkpoint {spec!r}: unknown method {name!r}; methods: {', '.join(known)}")
        if not Path(folder).expanduser().exists():
            fail(f"--method-checkpoint {spec!r}: {folder} does not exist (a checkpoint folder or file)")
        out[name] = folder
    return out


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        index_dir: list[Path] = typer.Argument(
            None, help="Index folder (default: the built-in world gallery). Several folders (shards), a folder "
                       "of shard indexes or a quoted glob are served as one gallery."),
        host: str = typer.Option("127.0.0.1", help="Interface to bind; keep loopback unless you mean it."),
        port: int = typer.Option(8000, min=0, max=65535),
        method: str = typer.Option(None, "--method", "-m", help="Default method (default: the index's)."),
        model: str = typer.Option(None, help="Backbone (default: the index's, or world-clip)."),
        checkpoint: str = typer.Option(None, help="Checkpoint folder of the default method."),
        option: list[str] = typer.Option(None, *OPTION, help="Method option KEY=VALUE."),
        method_checkpoint: list[str] = typer.Option(
            None, "--method-checkpoint", help="METHOD=DIR: checkpoint a selectable trained method loads."),
        backend: str = typer.Option("exact", help="Exact search backend: exact or faiss (flat)."),
        use_ann: bool = typer.Option(None, "--ann/--exact", help="Use the index's ANN (IVF-PQ) index / force "
                                     "exact search. Default: ANN when the index has an up-to-date one."),
        nprobe: int = typer.Option(None, min=1, help="ANN: inverted lists searched (default: the index's, max(64, nlist/16))."),
        max_upload_mb: float = typer.Option(10.0, callback=finite_positive, help="Largest accepted upload."),
        max_pixels: int = typer.Option(40_000_000, min=1, help="Largest accepted decoded upload (pixels)."),
        max_text: int = typer.Option(500, min=1, help="Longest accepted modification text (characters)."),
        max_k: int = typer.Option(100, min=1, help="Largest accepted k."),
        threads: int = THREADS,
        device: str = typer.Option("cpu"),
    ) -> None:
        """Serve composed search over an index: POST /search, GET /items/{id}/thumbnail, a web page at /."""
        try:
            import uvicorn

            from zscir.serve import ServeConfig, ServeLimits, create_app
        except ImportError as e:
            from zscir.extras import install_hint

            fail(f"{e}; install the server extra: {install_hint('serve')}")
        from zscir.backbones import DEFAULT_MODEL
        from zscir.index.retriever import Retriever, RetrieverConfig
        from zscir.index.search import list_search_backends
        from zscir.index.store import EmbeddingStore, StoreError
        from zscir.methods import check_method_options, create_composer
        from zscir.serve.world import ensure_world_gallery

        # every setting is checked here, before the model loads: a server that starts and then answers 422 to
        # every request (--max-k 0) or fails at the first selection of a method is worse than no server
        if backend not in list_search_backends():
            fail(f"--backend {backend!r}: expected one of {', '.join(list_search_backends())}")
        ckpts = parse_method_checkpoints(method_checkpoint)
        opts = parse_options(option)
        checkpoint = opts.pop("checkpoint", checkpoint)
        if checkpoint and not Path(checkpoint).expanduser().exists():
            fail(f"--checkpoint {checkpoint}: no such file or folder")
        if checkpoint and method:
            ckpts[method] = checkpoint
        if not index_dir:
            try:
                check_method_options(method or "sum", opts)
            except ValueError as e:
                fail(str(e))
        from zscir.threads import use_threads

        use_threads("query", threads)  # each request is one query: one thread unless --threads says otherwise
        rcfg = RetrieverConfig(backend=backend, ann=use_ann, nprobe=nprobe)
        try:
            if not index_dir:
                name = model or DEFAULT_MODEL
                default = method or "sum"
                if checkpoint:
                    ckpts[default] = checkpoint
                composer = create_composer(default, model=name, checkpoint=ckpts.get(default), device=device, **opts)
                typer.echo("no index given: serving the built-in world gallery (indexed once, then cached)")
                world = ensure_world_gallery(composer, name)
                index_dir = [world]
                retriever = Retriever(EmbeddingStore.load(world), composer, rcfg, checkpoints=ckpts,
                                      options={composer.name: opts})
            else:
                retriever = Retriever.load(index_dir, method=method, model=model, checkpoint=checkpoint,
                                           device=device, config=rcfg, checkpoints=ckpts, **opts)
            retriever.searcher_for(retriever.composer())  # open the ANN index now: stale/missing is reported at start
        except (StoreError, ValueError, FileNotFoundError, OSError, ImportError) as e:
            fail(str(e))
        limits = ServeLimits(max_upload_bytes=int(max_upload_mb * 2**20), max_pixels=max_pixels,
                             max_text_chars=max_text, max_k=max_k)
        api = create_app(retriever, ServeConfig(limits=limits))
        if host not in ("127.0.0.1", "localhost", "::1"):
            typer.secho(f"warning: listening on {host}: anyone who can reach it can query the index and see "
                        f"its images", fg="yellow", err=True)
        where = ", ".join(str(d) for d in index_dir)
        typer.echo(f"serving {len(retriever)} images from {where} on http://{host}:{port}/ (API docs: /docs)")
        uvicorn.run(api, host=host, port=port, log_level="warning")
