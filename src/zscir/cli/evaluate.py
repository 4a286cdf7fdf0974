"""`zscir eval`: the world benchmark, the real-picture benchmark and the public ones (CIRR, FashionIQ, CIRCO)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from zscir.cli.common import check_output_file, fail, make_composer, parse_options, write_output
from zscir.cli.options import (EMOJI_FONT, EMOJI_TEST, NPM_DIR, OPTION, OUT, THREADS, TUXPAINT_DIR, check_out_path,
                               real_sources)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        benchmark: str = typer.Option("world", help="world | real | cirr | fashioniq | circo"),
        method: list[str] = typer.Option(
            ["sum"], "--method", "-m",
            help="Method(s) to evaluate (repeatable); per-method options as NAME:KEY=VALUE,KEY=VALUE "
                 "(e.g. -m sum:weight=0.3).",
        ),
        model: str = typer.Option(None, help="Backbone name (default: world-clip)."),
        checkpoint: str = typer.Option(None, help="Checkpoint folder of a trained method."),
        option: list[str] = typer.Option(None, *OPTION, help="Method option KEY=VALUE (repeatable)."),
        data_root: Path = typer.Option(None, help="Dataset root (real benchmarks)."),
        split: str = typer.Option(None, help="Split: val (default) for cirr/fashioniq/circo; test (default) or "
                                               "val for --benchmark real."),
        world_seed: int = typer.Option(0, help="Seed of the world benchmark."),
        output: Path = typer.Option(None, *OUT, "--output",
                                    help="Write the results (metrics + configuration) as JSON."),
        batch_size: int = typer.Option(128, min=1, help="Encoding batch size."),
        limit: int = typer.Option(None, min=1, help="Evaluate only the first N queries (quick runs)."),
        cache_dir: Path = typer.Option(None, help="Feature cache folder (default: under $ZSCIR_CACHE)."),
        device: str = typer.Option("cpu", help="cpu | cuda | cuda:N"),
        flag: list[str] = typer.Option(None, "--flag", help="Protocol flag KEY=VALUE (real benchmarks)."),
        progress: bool = typer.Option(True, help="Show progress bars."),
        breakdown: bool = typer.Option(False, help="World: also print R@1/R@5 per edit kind and held-out combos."),
        tune_on: str = typer.Option(None, "--tune-on", help="Real: choose each fusion method's knob (sum weight, "
                                                            "slerp alpha) on this split (val), report the choice "
                                                            "on --split (test); `-m sum` tries its default grid."),
        baseline: str = typer.Option(None, help="Real: the -m text the paired differences are taken against "
                                                "(default: the first method)."),
        bootstrap: int = typer.Option(2000, min=0, help="Real: bootstrap redraws of the 95 % intervals (0: none)."),
        resample: str = typer.Option("family", help="Real: what the bootstrap redraws: family (concept families, "
                                                    "the default: their queries are correlated) or query."),
        mean_seeds: bool = typer.Option(False, "--mean-seeds", help="Real: also a row averaging the methods that "
                                                                    "differ only in their checkpoint (seeds), "
                                                                    "per query, with its interval and difference."),
        threads: int = THREADS,
        emoji_font: Path = EMOJI_FONT, emoji_test: Path = EMOJI_TEST, tuxpaint_dir: Path = TUXPAINT_DIR,
        npm_dir: Path = NPM_DIR,
    ) -> None:
        """Evaluate one or more methods and print the standard table.

        --benchmark real renders its pictures (first run) from the Debian packages fonts-noto-color-emoji,
        unicode-data and tuxpaint-stamps-default, or from the paths given by --emoji-font, --emoji-test and
        --tuxpaint-dir.
        """
        check_out_path(output)
        check_output_file(output, "results file (--out)")
        options = parse_options(option)
        if benchmark != "real" and (tune_on or baseline or mean_seeds or resample != "family" or bootstrap != 2000):
            fail("--tune-on, --baseline, --mean-seeds, --bootstrap and --resample are options of --benchmark real")
        if tune_on is not None and (tune_on != "val" or (split or "test") != "test"):
            fail(f"--tune-on {tune_on} --split {split or 'test'}: tuning is on val and the report on test "
                 "(--tune-on val --split test)")
        if benchmark == "real":
            from zscir.eval.real import check_bootstrap

            try:
                check_bootstrap(bootstrap, resample)
            except ValueError as e:
                fail(f"--bootstrap/--resample: {e}")
        if baseline is not None:  # checked now: a typo found after the whole run would cost the run
            names = set(method)
            if tune_on:
                from zscir.eval.tuning import tuning_groups
                from zscir.methods.registry import list_methods

                grids = {spec.name: spec.grid for spec in list_methods()}
                try:
                    names |= {g.name for g in tuning_groups(method, grids.get)}
                except ValueError as e:
                    fail(str(e))
            if baseline not in names:
                fail(f"--baseline {baseline!r} is not one of the evaluated methods: {', '.join(sorted(names))}")
        from zscir.threads import use_threads

        chosen = use_threads("batch", threads).as_dict()  # recorded in each result
        if benchmark == "real":  # missing packages are reported before any model loads
            from zscir.eval.real import ensure_real_benchmark

            ensure_real_benchmark(None, 0, progress, real_sources(emoji_font, emoji_test, tuxpaint_dir, npm_dir),
                                  check_only=True)
        def evaluate(m: str, on_split: str | None) -> dict:
            name, _, spec = m.partition(":")
            per_method = {**options, **parse_options([kv for kv in spec.split(",") if kv])}
            composer = make_composer(name, model, checkpoint, device, per_method)
            if benchmark == "world":
                from zscir.eval.world import evaluate_world

                r = evaluate_world(composer, world_seed=world_seed, batch_size=batch_size,
                                   cache_dir=cache_dir, progress=progress, limit=limit)
            elif benchmark == "real":
                from zscir.data.outdir import OutputFolderError
                from zscir.eval.real import evaluate_real

                try:
                    r = evaluate_real(composer, split=on_split or "test", batch_size=batch_size, cache_dir=cache_dir,
                                      progress=progress, limit=limit,
                                      sources=real_sources(emoji_font, emoji_test, tuxpaint_dir, npm_dir),
                                      bootstrap=bootstrap, resample=resample)
                except (OutputFolderError, ValueError) as e:
                    fail(str(e))
            elif benchmark in ("cirr", "fashioniq", "circo"):
                if data_root is None:
                    fail(f"--data-root is required for --benchmark {benchmark} (see docs/BENCHMARKS.md)")
                from zscir.eval.benchmarks import evaluate_benchmark

                r = evaluate_benchmark(benchmark, data_root, on_split or "val", composer, batch_size=batch_size,
                                       limit=limit, cache_dir=cache_dir, device=device,
                                       progress=progress, **parse_options(flag))
            else:
                fail(f"unknown benchmark {benchmark!r}: expected world, real, cirr, fashioniq or circo")
            r["label"] = m
            r["threads"] = chosen
            return r

        if tune_on:
            results = _tuned(method, evaluate)
        else:
            results = [evaluate(m, split) for m in method]
        if benchmark == "world":
            from zscir.eval.world import format_breakdown, format_world_table

            typer.echo(format_world_table(results))
            if breakdown:
                for r in results:
                    typer.echo(format_breakdown(r))
        elif benchmark == "real":
            from zscir.eval.real import format_real_table, paired_table

            try:
                if mean_seeds:
                    results = results + _seed_means(results, bootstrap, resample)
                paired = paired_table(results, baseline, samples=bootstrap, resample=resample) if bootstrap else []
            except ValueError as e:
                fail(str(e))
            typer.echo(format_real_table(results, paired))
            if paired:
                for r in results:  # the JSON keeps each difference with the method it belongs to
                    r["paired"] = [d for d in paired if d["method"] == r["label"]]
        else:
            from zscir.eval.benchmarks import format_table

            for r in results:
                typer.echo(format_table(r))
        if output:
            payload = results[0] if len(results) == 1 else {"results": results}
            write_output(output, json.dumps(payload, indent=2, default=str))
            typer.echo(f"wrote {output}")


def _tuned(method: list[str], evaluate) -> list[dict]:
    """``--tune-on val``: each group's candidates on val, the best (val R@1) of each on test (`zscir.eval.tuning`)."""
    from zscir.eval.tuning import choose, tuning_groups
    from zscir.methods.registry import list_methods

    grids = {spec.name: spec.grid for spec in list_methods()}
    try:
        groups = tuning_groups(method, grids.get)
    except ValueError as e:
        fail(str(e))
    results = []
    for g in groups:
        if not g.tuned:
            results.append(evaluate(g.candidates[0], "test"))
            continue
        val = {c: evaluate(c, "val")["metrics"].get("R@1", float("nan")) for c in g.candidates}
        pick = choose(g, val)
        typer.echo(f"tuned on val: {g.name} -> {pick} (val R@1 of each: "
                   + ", ".join(f"{c} {v:.2f}" for c, v in val.items()) + ")")
        r = evaluate(pick, "test")
        r["tuned_on"] = {"split": "val", "metric": "R@1", "group": g.name, "knob": g.knob, "chosen": pick, "val": val}
        results.append(r)
    return results


def _seed_means(results: list[dict], bootstrap: int, resample: str) -> list[dict]:
    """``--mean-seeds``: one averaged result per group of results that differ only in their checkpoint."""
    from zscir.eval.real import mean_result
    from zscir.eval.tuning import seed_groups

    by_label = {r["label"]: r for r in results}
    return [mean_result([by_label[m] for m in group], bootstrap, resample)
            for group in seed_groups(list(by_label))]
