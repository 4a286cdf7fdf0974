"""`zscir demo`: the main job on the embedded default (``--real``: on real pictures with lit-clipart)."""

from __future__ import annotations

from pathlib import Path

import typer

from zscir.cli.options import EMOJI_FONT, EMOJI_TEST, NPM_DIR, OUT, THREADS, TUXPAINT_DIR, real_sources

#: each demo has its own default output folder, so `zscir demo --real` and `zscir demo` keep each other's results
DEFAULT_OUT = {False: Path("zscir-demo"), True: Path("zscir-demo-real")}


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out: Path = typer.Option(None, *OUT, help="Folder for results.png and results.html: new, empty, or an "
                                 "earlier demo's [default: zscir-demo, with --real zscir-demo-real]."),
        method: str = typer.Option("auto", help="Method name, or 'auto' for the best available one."),
        model: str = typer.Option(None, help="Backbone (default: the shipped world-clip)."),
        queries: int = typer.Option(8, min=1, help="Number of composed queries to run."),
        k: int = typer.Option(5, "-k", min=1, help="Results shown per query (at most the gallery size - 1)."),
        world_seed: int = typer.Option(0, help="Seed of the world benchmark used as gallery."),
        real: bool = typer.Option(False, "--real", help="Real pictures instead of the world: emoji and stamps from "
                                  "the Debian packages fonts-noto-color-emoji, unicode-data and "
                                  "tuxpaint-stamps-default (or the paths given below), the shipped lit-clipart "
                                  "model (the [real] extra)."),
        emoji_font: Path = EMOJI_FONT, emoji_test: Path = EMOJI_TEST, tuxpaint_dir: Path = TUXPAINT_DIR,
        npm_dir: Path = NPM_DIR,
        threads: int = THREADS,
    ) -> None:
        """Build the world gallery, run composed queries, print results and write a result grid."""
        from zscir.demo import run_demo
        from zscir.threads import use_threads

        out = DEFAULT_OUT[real] if out is None else out
        use_threads("batch", threads)
        if real:
            typer.echo("zscir demo --real: rendering a small gallery of held-out real pictures (first run) and "
                       "loading lit-clipart ...")
        else:
            typer.echo("zscir demo: preparing the world gallery and the model (first run writes the world "
                       "benchmark to the cache) ...")
        r = run_demo(out, method=method, model=model, n_queries=queries, k=k, world_seed=world_seed, real=real,
                     sources=real_sources(emoji_font, emoji_test, tuxpaint_dir, npm_dir) if real else None,
                     progress=True)
        typer.echo(f"method: {r['method']}   gallery: {r['gallery_size']} images\n")
        for i, q in enumerate(r["queries"], 1):
            found = f"target found at rank {q.target_rank}" if q.target_rank and q.target_rank <= k else (
                f"target NOT in top {k} (rank {q.target_rank})")
            typer.echo(f"[{i}] ({q.kind}) reference {q.reference} + \"{q.text}\"  ->  {found}")
            for j, (name, score) in enumerate(q.results, 1):
                mark = "  <- target" if name == q.target else ""
                typer.echo(f"      {j}. {name}  {score:.4f}{mark}")
        typer.echo(f"\n{r['hits']}/{len(r['queries'])} targets in the top {k}.")
        typer.echo(f"wrote {r['png']}\nwrote {r['html']}")
        if not real:
            from zscir.backbones.lit import default_towers_installed

            if default_towers_installed():
                typer.echo("real pictures: `zscir demo --real` (held-out emoji and stamps, the lit-clipart model; "
                           "needs the Debian packages fonts-noto-color-emoji, unicode-data, tuxpaint-stamps-default)")
