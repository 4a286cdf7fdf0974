"""`zscir viz fused ...` (2-D map of fused embeddings) and `zscir sweep ...` (parameter sensitivity)."""

from __future__ import annotations

from pathlib import Path

import typer

from zscir.cli.common import make_composer, parse_options
from zscir.cli.options import OPTION, OUT, THREADS, check_out_path

viz_app = typer.Typer(help="Visualisations of methods' embedding spaces.", no_args_is_help=True)


def _floats(text: str | None) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()] if text else []


def register(app: typer.Typer) -> None:
    @viz_app.command("fused")
    def fused_cmd(
        output: Path = typer.Option(Path("fused_map.png"), *OUT, "--output", help="PNG to write (+ .json)."),
        method: str = typer.Option("fusiondiff", "--method", "-m", help="fusiondiff | fusiondiff-image"),
        model: str = typer.Option(None), checkpoint: str = typer.Option(None),
        option: list[str] = typer.Option(None, *OPTION, help="Method option KEY=VALUE."),
        projection: str = typer.Option("pca", help="pca | tsne"),
        n_queries: int = typer.Option(8), n_gallery: int = typer.Option(600),
        seed: int = typer.Option(0), world_seed: int = typer.Option(0),
        threads: int = THREADS,
    ) -> None:
        """Map reference, query, generated and target fused embeddings over the gallery (PCA/t-SNE)."""
        from zscir.threads import use_threads
        from zscir.viz.fused import FusedMapConfig, fused_map

        use_threads("batch", threads)

        check_out_path(output)
        composer = make_composer(method, model, checkpoint, "cpu", parse_options(option))
        info = fused_map(composer, output, FusedMapConfig(n_queries, n_gallery, projection, seed=seed), world_seed)
        typer.echo(f"wrote {info['png']} (mean cosine to target: {info['mean_cosine_to_target']})")
        for i, q in enumerate(info["queries"]):
            typer.echo(f"{i}. {q['text']!r} → generated ≈ {q['nearest_captions'][:1]}")

    app.add_typer(viz_app, name="viz")

    @app.command("sweep")
    def sweep_cmd(
        out: Path = typer.Option(Path("runs/sweep"), *OUT, help="Folder for sweep.csv and sweep.png."),
        method: str = typer.Option("fusiondiff", "--method", "-m"),
        model: str = typer.Option(None), checkpoint: str = typer.Option(None),
        option: list[str] = typer.Option(None, *OPTION, help="Fixed method option KEY=VALUE."),
        guidance: str = typer.Option("1,1.5,2,3", help="Comma-separated guidance scales ('' to skip)."),
        steps: str = typer.Option("2,5,10,20", help="Comma-separated DDIM step counts ('' to skip)."),
        weights: str = typer.Option("0.3,0.4,0.5,0.6,0.7", help="Comma-separated fusion weights ('' to skip)."),
        limit: int = typer.Option(None, help="Only the first N queries (quick look)."),
        world_seed: int = typer.Option(0),
        threads: int = THREADS,
    ) -> None:
        """R@1/R@10 vs guidance scale, DDIM steps and fusion weight on the world benchmark (PNG + CSV)."""
        from zscir.threads import use_threads
        from zscir.viz.sweep import run_sweep

        use_threads("batch", threads)

        check_out_path(out)
        base = parse_options(option)
        grid = {k: v for k, v in (("guidance_scale", _floats(guidance)), ("steps", _floats(steps)),
                                  ("fusion_weight", _floats(weights))) if v}
        rows = run_sweep(lambda **kv: make_composer(method, model, checkpoint, "cpu", {**base, **kv}), grid, out,
                         world_seed=world_seed, limit=limit)
        for r in rows:
            typer.echo(f"{r['knob']:>15}={r['value']:<6g} R@1 {r['R@1']:6.2f}  R@10 {r['R@10']:6.2f}")
        typer.echo(f"wrote {out / 'sweep.csv'} and {out / 'sweep.png'}")
