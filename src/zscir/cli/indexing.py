"""`zscir index` and `zscir search`: composed search over a folder of the user's own images.

Both are thin shells over `zscir.index.build.build_index` and `zscir.index.retriever.Retriever`, so the CLI,
the Python API and `zscir serve` behave identically. `zscir index merge` and `zscir index ann` are
maintenance steps on finished indexes (merging shards; building the FAISS IVF-PQ index).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from zscir.cli.common import check_output_file, fail, finite_positive, make_composer, parse_options, write_output
from zscir.cli.data import ALLOW_PIPE
from zscir.cli.options import OPTION, THREADS, check_out_path
from zscir.index.names import printable


def register(app: typer.Typer) -> None:
    @app.command()
    def index(
        folder: str = typer.Argument(..., metavar="SRC", help="Folder of images (scanned recursively), "
                                     "WebDataset shards (wds:PATTERN, *.tar), a table of paths or URLs (*.parquet, "
                                     "*.csv), or `merge` / `ann` / `export`."),
        targets: list[Path] = typer.Argument(None, help="With FOLDER=ann: the index folders to build it for."),
        out: Path = typer.Option(None, "--out", "-o", help="Index folder to write (created, updated or resumed)."),
        method: list[str] = typer.Option(
            None, "--method", "-m",
            help="Method whose gallery encoder embeds the images (default: the methods of the index in --out, "
                 "else sum). Repeat to also store the gallery of methods that embed it differently, e.g. -m sum "
                 "-m fusiondiff."),
        model: str = typer.Option(None, help="Backbone (default: the model of the index in --out, else "
                                  "world-clip)."),
        checkpoint: str = typer.Option(None, help="Checkpoint folder of the (first) trained method."),
        batch_size: int = typer.Option(64, min=1, max=4096),
        fp16: bool = typer.Option(False, help="Store embeddings as float16 (half the size)."),
        hash_content: bool = typer.Option(False, "--hash", help="Detect changes by SHA-256 instead of size+mtime."),
        max_pixels: int = typer.Option(64_000_000, min=1, help="Skip images with more pixels (decompression bombs)."),
        max_file_mb: float = typer.Option(100.0, callback=finite_positive, help="Skip files larger than this."),
        workers: int = typer.Option(None, min=0, max=64,
                                    help="Threads decoding images (default: the cores torch leaves free, at least 1)."),
        throttle: float = typer.Option(0.0, hidden=True, help="Sleep after each batch (seconds)."),
        report: Path = typer.Option(None, help="Write the run report (incl. skipped files) as JSON here."),
        device: str = typer.Option("cpu"),
        shard: str = typer.Option(None, "--shard", help="I/N: index only shard I (0-based) of N; each shard "
                                  "is an independent index, combined by `zscir index merge`."),
        merge_from: list[Path] = typer.Option(None, "--from", help="With FOLDER=merge: shard indexes to merge."),
        ann: str = typer.Option(None, "--ann", help="`ivfpq`: also build a FAISS IVF-PQ index per gallery (kept "
                                "up to date by later runs); see `zscir index ann` for its options."),
        factory: str = typer.Option(None, help="ANN: faiss index factory [default: IVF{2√N},PQ{d/8}x4fs]."),
        train_sample: int = typer.Option(None, min=64, help="ANN: vectors sampled to train it [default: "
                                         "max(16384, 40 x nlist), at most all]."),
        nprobe: int = typer.Option(None, min=1, help="ANN: inverted lists searched per query [default: max(64, nlist/16)]."),
        k_factor: int = typer.Option(None, min=1, help="ANN: candidates re-ranked = k_factor x k [default: 16]."),
        rerank: str = typer.Option(None, help="ANN: `store` (exact re-rank from the memory-mapped embeddings, "
                                   "default) or `none` (PQ scores only)."),
        min_items: int = typer.Option(None, min=0, help="ANN: smaller galleries keep exact search [default: 1000]."),
        ann_kind: str = typer.Option(None, "--kind", help="ANN: `ivfpq` (in RAM, default), `ivfpq-ondisk` or "
                                     "`ivfsq8-ondisk` (lists merged on disk and memory-mapped; docs/SCALING.md)."),
        memory_budget: str = typer.Option(None, "--memory-budget", help="ANN on-disk kinds: RAM bound of the "
                                          "build, e.g. 1.5GB [default: 1.5GB]."),
        remove: bool = typer.Option(False, "--remove", help="With FOLDER=ann: delete the ANN indexes."),
        layout: str = typer.Option(None, "--layout", help="With FOLDER=export: `clip-retrieval` (the only one)."),
        partition_size: int = typer.Option(None, "--partition-size", min=1,
                                           help="With FOLDER=export: items per partition [default: 1000000]."),
        rebuild: bool = typer.Option(False, "--rebuild", help="With FOLDER=ann: rebuild even if up to date."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an index of another model or another "
                                       "image folder in --out (refused without it)."),
        threads: int = THREADS,
        engine: str = typer.Option(None, "--engine", help="local (default: this process) or ray (a Ray Data actor "
                                   "pool, one model per actor; needs the [ray] extra). See docs/SCALING.md."),
        partitions: int = typer.Option(None, "--partitions", min=1, help="Split SRC into N fixed output partitions "
                                       "OUT/part-*, each written atomically with a done marker; a re-run embeds "
                                       "only the missing ones."),
        partition: str = typer.Option(None, "--partition", help="With --partitions: embed only partition I "
                                      "(default in a Slurm array: $SLURM_ARRAY_TASK_ID)."),
        jobs: int = typer.Option(None, "--jobs", min=1, max=4096, help="Partitions embedded at once: local "
                                 "processes, or Ray actors (one GPU each where the cluster has GPUs)."),
        ray_address: str = typer.Option(None, "--ray-address", help="With --engine ray: the cluster (default: "
                                        "$RAY_ADDRESS, else a local Ray)."),
        allow_pipe: bool = ALLOW_PIPE,
        allow_remote: bool = typer.Option(False, "--allow-remote", help="Let shards, a table, or a table's rows be "
                                          "remote URLs (s3://, gs://, https://, ... through fsspec)."),
        image_column: str = typer.Option(None, "--image-column", help="Table SRC: the column of image paths or "
                                         "URLs [default: image_path, url or filepath]."),
        caption_column: str = typer.Option(None, "--caption-column", help="Table SRC: a caption column to keep "
                                           "as metadata."),
        shard_ids: bool = typer.Option(False, "--shard-ids", help="WebDataset SRC: ids are SHARD/KEY instead of "
                                       "KEY (for keys that repeat across shards)."),
    ) -> None:
        """Embed a folder of images into an index for `zscir search` / `zscir serve`.

        Re-running is cheap and safe: it resumes an interrupted run and encodes only new or changed files, and
        an unchanged folder is recognised without loading the model. --out must be a new or empty folder or
        an index; zscir never writes into or deletes from any other folder.
        `zscir index merge -o OUT --from SHARD0 --from SHARD1 ...` concatenates finished shard indexes.
        `zscir index export --from IDX -o OUT --layout clip-retrieval` writes an index in clip-retrieval's
        layout (img_emb/ + metadata/) into a new or empty folder.
        `zscir index ann IDX [IDX ...]` builds (or refreshes) the FAISS IVF-PQ index of finished indexes,
        e.g. of each shard; `--remove` deletes it.
        """
        check_output_file(report, "run report (--report)")  # before the index is written, not after
        src, folder = folder, Path(folder)  # the spec as typed (Path would fold s3:// into s3:/)
        from zscir.backbones import DEFAULT_MODEL
        from zscir.index.ann import ANN_KINDS, AnnConfig
        from zscir.index.build import (ImageLimits, IndexConfig, IndexLockedError, build_index, check_destination,
                                       check_up_to_date, make_request)
        from zscir.index.store import StoreError

        # ANN options given on the command line override the index's recorded settings (or the defaults)
        ann_given = {"factory": factory, "train_sample": train_sample, "nprobe": nprobe, "k_factor": k_factor,
                     "rerank": rerank, "min_items": min_items, "kind": ann_kind or (ann if ann in ANN_KINDS else None),
                     "memory_budget": memory_budget}
        try:
            AnnConfig.merged(None, ann_given)  # validate before any work
        except ValueError as e:
            fail(str(e))

        if str(folder) == "export" and not folder.is_dir():
            _index_export(merge_from, out, layout, partition_size, targets)
            return
        if layout is not None or partition_size is not None:
            fail("--layout and --partition-size are for `zscir index export`")
        if str(folder) == "ann" and not folder.is_dir():
            _index_ann(list(targets or []) + ([out] if out else []), ann_given, remove, rebuild, threads)
            return
        if targets:
            fail(f"unexpected extra arguments {[str(t) for t in targets]} (only `zscir index ann` takes several)")
        if out is None:
            fail("missing option --out / -o: the index folder to write")
        if ann not in (None, *ANN_KINDS):
            fail(f"--ann {ann!r}: the only kind is `ivfpq` in RAM (another faiss factory: --factory); on disk: "
                 f"{', '.join(k for k in ANN_KINDS if k != 'ivfpq')}")
        if ann is None and any(v is not None for v in ann_given.values()):
            fail("the ANN options (--factory, --nprobe, ...) need --ann ivfpq (or `zscir index ann IDX`)")
        if str(folder) == "merge" and not folder.is_dir():
            if not merge_from:
                fail("zscir index merge: give the shard indexes with --from DIR (repeat it)")
            from zscir.index.merge import merge_indexes

            try:
                rep = merge_indexes(merge_from, out, overwrite=overwrite)
            except (StoreError, ValueError, IndexLockedError) as e:
                fail(str(e))
            typer.echo(f"{out}: {rep.indexed} images merged from {len(merge_from)} shards "
                       f"(generation {rep.generation}, skipped {len(rep.skipped)})")
            if ann:
                _index_ann([out], ann_given, remove=False, rebuild=False, threads=threads)
            return
        from zscir.cli.index_partitions import (PartitionOptions, is_collection_spec, parse_shard, refuse_mixed,
                                                run_partitioned)

        popts = PartitionOptions(engine, partitions, partition, jobs, ray_address)
        source_options = {"allow_pipe": allow_pipe, "allow_remote": allow_remote, "image_column": image_column,
                          "caption_column": caption_column, "shard_ids": shard_ids}
        if not folder.is_dir() and not popts.wanted() and is_collection_spec(src):
            popts.engine = "local"  # shards and tables are always indexed in partitions
            popts.force = True
        elif any(source_options.values()) and not is_collection_spec(src):
            fail("--allow-pipe, --allow-remote, --image-column, --caption-column and --shard-ids are for "
                 "WebDataset shards and tables, not an image folder")
        refuse_mixed(popts, shard=shard if popts.wanted() else None, ann=ann if popts.wanted() else None,
                     hash_content=hash_content and popts.wanted(), overwrite=overwrite and popts.wanted())
        if popts.wanted():
            run_partitioned(src, out, popts, source_options=source_options, model=model, methods=method, checkpoint=checkpoint, device=device,
                            batch_size=batch_size, fp16=fp16, threads=threads, report=report, throttle=throttle,
                            limits=ImageLimits(max_bytes=int(max_file_mb * 2**20), max_pixels=max_pixels))
            return
        from zscir.index.remembered import index_choice
        from zscir.index.scan import check_image_folder

        try:  # every argument before any model load; the index in --out supplies the model and methods
            check_image_folder(folder)
            choice = index_choice(out, model, method, default_model=DEFAULT_MODEL, default_methods=["sum"])
        except (NotADirectoryError, StoreError) as e:
            fail(str(e))
        ann_cfg = None
        if ann:
            from zscir.index.faiss_search import import_faiss
            from zscir.index.folder import read_manifest

            try:
                import_faiss()  # fail before encoding, not after
                ann_cfg = AnnConfig.merged((read_manifest(out.resolve()) or {}).get("ann_config"), ann_given)
            except (StoreError, ImportError) as e:
                fail(str(e))
        shard_spec = parse_shard(shard) if shard else None

        methods, model_name = choice.methods, choice.model
        cfg = IndexConfig(batch_size=batch_size, fp16=fp16, hash_content=hash_content, workers=workers,
                          throttle_s=throttle, shard=shard_spec, ann=ann_cfg,
                          limits=ImageLimits(max_bytes=int(max_file_mb * 2**20), max_pixels=max_pixels))
        request = make_request(model_name, methods, checkpoint)
        try:  # a refused --out, or an unchanged folder (manifest + file stats), needs no model
            check_destination(folder, out, model=model_name, overwrite=overwrite)
            rep = check_up_to_date(folder, out, request=request, config=cfg)
        except (NotADirectoryError, StoreError, ValueError) as e:
            fail(str(e))
        if rep is None:
            from zscir.backbones.registry import real_images_note
            from zscir.threads import use_threads

            cfg.threads = use_threads("batch", threads).as_dict()  # recorded in the manifest

            if note := real_images_note(model_name):  # the default model knows only the procedural world
                typer.secho(note, fg="yellow", err=True)
            if choice.remembered and (model_name != DEFAULT_MODEL or methods != ["sum"]):  # not the defaults
                typer.secho(f"note: {printable(choice.describe())}", fg="yellow", err=True)
            first = make_composer(methods[0], model_name, checkpoint, device, {})
            composers = [first]
            for m in methods[1:]:
                try:
                    from zscir.methods import create_composer

                    composers.append(create_composer(m, model=model_name, backbone=first.backbone, device=device))
                except (ValueError, FileNotFoundError, OSError, TypeError) as e:
                    fail(f"method {m!r}: {e}")
            try:
                rep = build_index(folder, out, composers, model=model_name, config=cfg, overwrite=overwrite,
                                  request=request)
            except (NotADirectoryError, StoreError, IndexLockedError, ImportError, ValueError) as e:
                fail(str(e))
        if report:
            write_output(report, json.dumps(asdict(rep), indent=2) + "\n")
        if rep.up_to_date:
            typer.echo(f"{printable(out)}: index up to date ({rep.indexed} items, skipped {len(rep.skipped)})")
        else:
            typer.echo(f"{printable(out)}: {rep.indexed} images (generation {rep.generation}; encoded {rep.encoded}, "
                       f"reused {rep.reused}, resumed {rep.resumed}, removed {rep.removed}, "
                       f"skipped {len(rep.skipped)})")
        for s in rep.skipped[:50]:
            typer.echo(f"  skipped {printable(s['id'])}: {printable(s['reason'])}")
        if len(rep.skipped) > 50:
            typer.echo(f"  ... and {len(rep.skipped) - 50} more (see --report or manifest.json)")
        for key, what in rep.ann.items():
            typer.echo(f"  ANN {key}: {what}")
        if rep.indexed == 0:
            typer.secho("warning: the index is empty (no readable images)", fg="yellow", err=True)

    @app.command()
    def search(
        index_dirs: list[Path] = typer.Argument(
            ..., help="Index folder written by `zscir index`. Several folders (shards), a folder of shard "
                      "indexes or a quoted glob are searched as one gallery without merging."),
        image: str = typer.Option(None, "--image", "-i", help="Reference image: a file path or an indexed item "
                                  "id. Alone: pictures like it (more like this)."),
        text: str = typer.Option(None, "--text", "-t", help="Modification text. Alone: a text search."),
        queries: Path = typer.Option(None, "--queries", help="A .jsonl or .csv file of queries (image and/or text "
                                     "per row): all answered with one model load, as JSON lines."),
        output: Path = typer.Option(None, "--output", "--out", "-o", help="With --queries: write the JSON lines "
                                    "to this new file (default: stdout)."),
        k: int = typer.Option(10, "-k", min=1, max=1000),
        method: str = typer.Option(None, "--method", "-m", help="Method (default: the one the index was built with)."),
        model: str = typer.Option(None, "--model", help="Backbone: needed for a clip-retrieval folder without "
                                  "zscir-export.json (the CLIP its embeddings were made with); a zscir index "
                                  "knows its own."),
        checkpoint: str = typer.Option(None),
        option: list[str] = typer.Option(None, *OPTION, help="Method option KEY=VALUE."),
        backend: str = typer.Option("exact", help="Exact search backend: exact or faiss (flat)."),
        use_ann: bool = typer.Option(None, "--ann/--exact", help="Use the index's ANN (IVF-PQ) index / force "
                                     "exact search. Default: ANN when the index has an up-to-date one."),
        nprobe: int = typer.Option(None, min=1, help="ANN: inverted lists searched (default: the index's, max(64, nlist/16))."),
        k_factor: int = typer.Option(None, min=1, help="ANN: candidates re-ranked = k_factor x k (default 16)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        grid: Path = typer.Option(None, "--grid", help="Also save the reference and results as an image grid."),
        device: str = typer.Option("cpu"),
        threads: int = THREADS,
    ) -> None:
        """Search an index: reference image + modification text → ranked images; or a text alone, or a picture
        alone (more like this); or a file of queries (--queries).

        Without --method, a text alone is answered by the `text` method and a picture alone by `image` (a
        note says so); a method named with --method that needs the missing side is refused.
        """
        rows = None
        if queries is not None:
            from zscir.cli.search_batch import load_batch

            rows = load_batch(queries, check_out_path(output), image=image, text=text, grid=grid)
        elif output is not None:
            fail("--output is for --queries; a single search prints its results (--json for JSON)")
        elif image is None and text is None:
            fail("give a reference image (--image), a text (--text), both, or a file of queries (--queries)")
        check_grid_path(grid)
        from zscir.threads import use_threads

        use_threads("query", threads)  # one query: one thread unless --threads says otherwise
        from zscir.data.imageio import ImageRejected
        from zscir.index.retriever import MethodUnavailable, Retriever, RetrieverConfig, hits_to_json
        from zscir.index.store import StoreError

        opts = parse_options(option)
        checkpoint = opts.pop("checkpoint", checkpoint)  # -O checkpoint=DIR, as in the other commands
        try:
            r = Retriever.load(index_dirs, method=method, model=model, checkpoint=checkpoint, device=device,
                               config=RetrieverConfig(backend=backend, progress=True, ann=use_ann, nprobe=nprobe,
                                                      k_factor=k_factor), **opts)
            if rows is not None:
                from zscir.cli.search_batch import run_batch

                run_batch(r, rows, queries, output, k=k, method=method)
                return
            plan = r.plan(image is not None, text, method)  # which method answers; refused before decoding
            # the reference: by id, path or content, one rule for every door
            ref, indexed = r.resolve_reference(image) if image is not None else (None, None)
            hits = r.search_image(ref, text, k=k, method=method, exclude=indexed.rows if indexed else None)
        except (StoreError, FileNotFoundError, ValueError, ImageRejected, MethodUnavailable, ImportError) as e:
            fail(str(e))
        for note in (plan.note, r.search_note(plan.method)):
            if note:
                typer.secho(f"note: {printable(note)}", fg="yellow", err=True)
        if indexed is not None and not as_json:  # --json prints exactly the result list, as documented
            typer.echo(indexed.describe())
        if as_json:
            typer.echo(hits_to_json(hits))
        else:
            for h in hits:
                typer.echo(f"{h.rank:>3}. {h.score:.4f}  {printable(h.path)}")
        if grid:
            save_grid(ref, text, hits, grid, limits=r.config.limits)
            if not as_json:
                typer.echo(f"grid saved to {grid}")


def _index_export(sources: list[Path] | None, out: Path | None, layout: str | None, partition_size: int | None,
                  extra: list[Path] | None) -> None:
    """`zscir index export --from IDX -o OUT --layout clip-retrieval`: the index in clip-retrieval's layout."""
    from zscir.index.clip_layout import DEFAULT_PARTITION_SIZE, export_clip_retrieval
    from zscir.index.store import StoreError

    if extra:
        fail(f"unexpected extra arguments {[str(t) for t in extra]}; give the index with --from IDX")
    if not sources:
        fail("zscir index export: give the index with --from IDX (repeat it for shards)")
    if out is None:
        fail("missing option --out / -o: the new or empty folder to export into")
    if layout != "clip-retrieval":
        fail(f"--layout {layout!r}: the only layout is `clip-retrieval`" if layout else
             "zscir index export: give --layout clip-retrieval")
    try:
        rep = export_clip_retrieval(sources, check_out_path(out), partition_size or DEFAULT_PARTITION_SIZE)
    except (StoreError, ValueError) as e:
        fail(str(e))
    typer.echo(f"{out}: {rep['count']} items exported in {rep['partitions']} partitions (clip-retrieval layout, "
               f"float16, model {rep['model']})")


def _index_ann(dirs: list[Path], overrides: dict, remove: bool, rebuild: bool, threads: int | None = None) -> None:
    """`zscir index ann IDX...`: build/refresh (or --remove) the ANN index of each finished index folder."""
    from zscir.index.ann import build_ann, remove_ann
    from zscir.index.folder import IndexLockedError
    from zscir.index.shards import resolve_index_paths
    from zscir.index.store import StoreError
    from zscir.threads import use_threads

    if not dirs:
        fail("zscir index ann: give the index folder(s), e.g. `zscir index ann ~/pictures.zscir`")
    try:
        if not remove:
            from zscir.index.faiss_search import import_faiss

            import_faiss()  # loaded first, so that the thread choice reaches FAISS too
            use_threads("batch", threads)
        for d in resolve_index_paths(dirs):
            if remove:
                typer.echo(f"{d}: removed {remove_ann(d)} ANN index(es); searches are exact")
                continue
            for key, what in build_ann(d, overrides=overrides, rebuild=rebuild).items():
                typer.echo(f"{d}: ANN {key}: {what}")
    except (StoreError, ValueError, IndexLockedError, ImportError) as e:
        fail(str(e))


def check_grid_path(grid: Path | None) -> None:
    """Fail before searching when ``--grid`` cannot be written (missing folder, unknown image extension)."""
    if grid is None:
        return
    check_output_file(grid, "image grid (--grid)")
    from PIL import Image

    Image.init()
    if grid.suffix.lower() not in Image.EXTENSION:
        fail(f"--grid {grid}: unknown image file extension {grid.suffix!r}; use .png or .jpg")


def save_grid(reference, text: str | None, hits, path: Path, limits=None, cell: int = 160) -> None:
    """Reference (if any) + results side by side with rank and score under each image (PIL only)."""
    from PIL import Image, ImageDraw

    from zscir.data.imageio import ImageLimits, ImageRejected, load_image
    from zscir.index.names import item_path

    limits = limits or ImageLimits()
    tiles = [(reference, "reference")] if reference is not None else []
    for h in hits:
        try:
            tiles.append((load_image(item_path(h.item), limits), f"#{h.rank} {h.score:.3f}"))
        except ImageRejected:
            tiles.append((Image.new("RGB", (cell, cell), (200, 200, 200)), f"#{h.rank} (missing)"))
    if not tiles:
        tiles.append((Image.new("RGB", (cell, cell), (240, 240, 240)), "no results"))
    cols = min(len(tiles), 6)
    rows = (len(tiles) + cols - 1) // cols
    pad, label = 4, 18
    canvas = Image.new("RGB", (cols * (cell + pad) + pad, 24 + rows * (cell + label + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    title = f"text: {text[:120]}" if text and text.strip() else "no text (more like this)"
    draw.text((pad, 4), title, fill="black")
    for i, (img, caption) in enumerate(tiles):
        t = img.copy()
        t.thumbnail((cell, cell))
        x = pad + (i % cols) * (cell + pad)
        y = 24 + (i // cols) * (cell + label + pad)
        canvas.paste(t, (x + (cell - t.width) // 2, y + (cell - t.height) // 2))
        draw.text((x, y + cell + 2), caption, fill="black")
    canvas.save(path)
