"""`zscir data make-triplets SPEC --out DIR`: synthetic triplets from a pair dataset (zscir.data.synth).

Registered on the ``data`` group that `zscir.cli.data` owns.
"""

from __future__ import annotations

from pathlib import Path

import typer

from zscir.cli.common import fail
from zscir.cli.data import data_app
from zscir.cli.heldout import HELDOUT, HELDOUT_MATCH
from zscir.cli.options import THREADS


@data_app.command("make-triplets")
def make_triplets_cmd(
    data: str = typer.Argument(..., help="Pair dataset SPEC (WebDataset shards, manifest, hf:..., world)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (new, empty, or an earlier make-triplets run)."),
    generator: list[str] = typer.Option(["mine", "substitute"], "--generator", "-g",
                                        help="mine | substitute | llm | variants (repeat the option for several)."),
    seed: int = typer.Option(0),
    limit: int = typer.Option(None, help="Read only the first N pairs."),
    model: str = typer.Option("world-clip", help="Backbone whose text encoder embeds captions for mining."),
    text_model: str = typer.Option(None, help="An HF text model (mean-pooled) for mining instead of --model."),
    k: int = typer.Option(10, help="Mining: nearest captions examined per caption."),
    max_edits: int = typer.Option(1, help="Mining: content-word spans allowed to differ."),
    per_reference: int = typer.Option(2, help="Mining: triplets kept per reference image."),
    min_similarity: float = typer.Option(-1.0, help="Mining: text-embedding cosine floor."),
    attributes: str = typer.Option("colour,count,size,material", help="Substitution: attribute kinds."),
    llm: str = typer.Option(None, help="Causal LM name or folder for the llm generator (local, transformers)."),
    max_per_generator: int = typer.Option(None, help="Cap the triplets of each generator."),
    image_size: int = typer.Option(224, help="Side the written images are fitted into."),
    image_root: Path = typer.Option(None, help="Resolves relative image paths of a manifest."),
    image_column: str = typer.Option(None), text_column: str = typer.Option(None),
    hq: str = typer.Option(None, help="HQ target images for text-target rows: ip2p | t2i (diffusers)."),
    hq_model: str = typer.Option(None, help="diffusers pipeline name or folder for --hq."),
    hq_steps: int = typer.Option(20), hq_guidance: float = typer.Option(7.5),
    clip_model: str = typer.Option(None, help="CLIP for the HQ score filters (default: --model)."),
    min_clip_text_image: float = typer.Option(None, help="HQ filter: target caption–target image CLIP score."),
    min_clip_direction: float = typer.Option(None, help="HQ filter: edit-direction CLIP similarity."),
    min_clip_image_image: float = typer.Option(None, help="HQ filter: reference–target image CLIP similarity."),
    heldout: Path = HELDOUT, heldout_match: str = HELDOUT_MATCH,
    variant_kinds: str = typer.Option("tone,gender,hair,colour,tint,style",
                                      help="Variants: attributes an edit may change."),
    variant_max_diff: int = typer.Option(1, help="Variants: attributes one edit may change at once."),
    variant_per_reference: int = typer.Option(None, help="Variants: at most N triplets per reference."),
    variant_negatives: int = typer.Option(8, help="Variants: same-family hard negatives listed per triplet."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Count the variants triplets per edit kind; write nothing."),
    device: str = typer.Option("cpu"),
    progress: bool = typer.Option(True),
    threads: int = THREADS,
) -> None:
    """Generate synthetic triplets from your own image–caption pairs (canonical triplet manifest)."""
    from zscir.data import DataError
    from zscir.data.outdir import OutputFolderError
    from zscir.data.synth.make import MakeTripletsConfig, count_variant_triplets, make_triplets
    from zscir.data.synth.templates import ATTRIBUTES, MiningConfig
    from zscir.data.synth.variants import VariantConfig

    kinds = tuple(a.strip() for a in attributes.split(",") if a.strip())
    if any(a not in ATTRIBUTES for a in kinds):
        fail(f"--attributes: unknown kind in {attributes!r}; expected some of {', '.join(ATTRIBUTES)}")
    cfg = MakeTripletsConfig(
        data=data, out=str(out), generators=tuple(generator), seed=seed, limit=limit, model=model,
        text_model=text_model, mining=MiningConfig(k=k, max_edits=max_edits, per_reference=per_reference,
                                                   min_similarity=min_similarity),
        attributes=kinds, llm=llm, max_per_generator=max_per_generator, image_size=image_size,
        image_root=str(image_root) if image_root else None, image_column=image_column, text_column=text_column,
        heldout=str(heldout) if heldout else None, heldout_match=heldout_match,
        variants=VariantConfig(kinds=tuple(a.strip() for a in variant_kinds.split(",") if a.strip()),
                               max_diff=variant_max_diff, per_reference=variant_per_reference,
                               negatives=variant_negatives))
    if hq and hq not in ("ip2p", "t2i"):
        fail(f"--hq must be ip2p or t2i, got {hq!r}")
    hq_targets = None
    from zscir.threads import use_threads

    use_threads("batch", threads)
    try:
        cfg.check()  # every numeric option, before a model is loaded
        if dry_run:
            c = count_variant_triplets(cfg, progress=progress)
            typer.echo(f"variants: {c['total']} triplets ({c['after_cap']} after --max-per-generator) from "
                       f"{c['pairs']} pairs in {c['families']} families; per edit kind: {c['per_kind'] or 'none'}; "
                       f"skipped: {c['skipped'] or 'none'}")
            return
        if hq:
            from zscir.data.synth.hq import HQConfig, HQTargets

            hq_targets = HQTargets.from_pretrained(HQConfig(
                mode=hq, model=hq_model, steps=hq_steps, guidance_scale=hq_guidance, seed=seed,
                image_size=image_size, clip_model=clip_model or model, min_text_image=min_clip_text_image,
                min_direction=min_clip_direction, min_image_image=min_clip_image_image), device=device)
        r = make_triplets(cfg, progress=progress, hq=hq_targets)
    except (DataError, OutputFolderError, FileNotFoundError) as e:
        fail(str(e))
    if r.get("per_edit"):
        typer.echo(f"variants per edit kind: {r['per_edit']}")
    typer.echo(f"wrote {r['triplets']} triplets {r['per_generator']} ({r['per_quality']}) from {r['pairs']} pairs "
               f"to {out / r['manifest']}; rejected: {r['rejected'] or 'none'}")
    if r["heldout"] is not None:
        typer.echo(f"held out ({r['heldout']['match']} match, {r['heldout']['folder']}): left out "
                   f"{r['heldout']['summary']}")
    else:
        typer.secho("warning: no --heldout folder: the pairs were not checked against the held-out concepts "
                    "(docs/DATA.md)", err=True)


def register(app: typer.Typer) -> None:
    """The command is attached to `data_app` at import; `zscir.cli.data` adds the group to ``app``."""
