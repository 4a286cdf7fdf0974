"""`zscir train fusiondiff-prior` and `zscir train fusiondiff-adapter` (registered by zscir.cli.train).

Both run data-parallel under ``torchrun --nproc-per-node=N -m zscir train fusiondiff-prior ...`` (progress
bars and output on rank 0 only; ``--batch-size`` is the global batch), see docs/SCALING.md.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from zscir.cli.data import ALLOW_PIPE, DATA, ID_TEMPLATE, IMAGE_COLUMN, IMAGE_ROOT, TEXT_COLUMN, VAL_DATA, WORKERS, data_errors, data_options
from zscir.cli.options import TRAIN_DEVICE_HELP
from zscir.threads import THREADS_HELP
from zscir.train.precision import PRECISION_HELP, Precision, parse_precision



def _overrides(**kw):
    return {k: v for k, v in kw.items() if v is not None}


def register_train(train_app: typer.Typer) -> None:
    @train_app.command("fusiondiff-prior")
    def prior_cmd(
        out: Path = typer.Option(Path("runs/fusiondiff-prior"), "--out", "-o", help="Output checkpoint folder."),
        model: str = typer.Option("world-clip", help="Backbone."),
        space: str = typer.Option("joint", help="joint (fused image+caption) | image (CompoDiff-like ablation)."),
        fusion_weight: float = typer.Option(None, help="Text share of the fused embedding (default 0.5)."),
        steps: int = typer.Option(None), batch_size: int = typer.Option(None), lr: float = typer.Option(None),
        bank_pairs: int = typer.Option(None, help="World training pairs (also the caption bank)."),
        width: int = typer.Option(None), layers: int = typer.Option(None),
        prediction_type: str = typer.Option(None, help="sample (x0) | epsilon"),
        eval_every: int = typer.Option(None), seed: int = typer.Option(0), world_seed: int = typer.Option(0),
        threads: int = typer.Option(None, min=0, help=THREADS_HELP),
        device: str = typer.Option("cpu", help=TRAIN_DEVICE_HELP),
        resume: bool = typer.Option(False, help="Continue from the last checkpoint in --out."),
        progress: bool = typer.Option(True),
        data: str = DATA, val_data: str = VAL_DATA, image_root: Path = IMAGE_ROOT, image_column: str = IMAGE_COLUMN,
        text_column: str = TEXT_COLUMN, workers: int = WORKERS, allow_pipe: bool = ALLOW_PIPE,
        captioner: str = typer.Option(None, help="Gallery captioner stored in the checkpoint: retrieval | generative."),
        caption_bank: str = typer.Option(None, "--caption-bank", help="Pair SPEC whose captions the retrieval "
                                         "captioner uses (default: --data when it is not the world); the "
                                         "captions are stored in the checkpoint as caption_bank.json."),
        captioner_model: str = typer.Option(None, help="transformers image-to-text model for --captioner generative."),
        precision: Precision = typer.Option(
            Precision.fp32, help=PRECISION_HELP + " Default here fp32: it reproduces the shipped checkpoint."),
        heldout: Path = typer.Option(None, "--heldout", help="Held-out folder (emoji-ids.txt, tuxpaint-stamps.txt): "
                                     "its items' captions are left out of the caption bank (docs/DATA.md)."),
    ) -> None:
        """Stage 1: pre-train the diffusion prior over fused embeddings on world image–caption pairs."""
        from zscir.methods.fusiondiff.train_prior import PriorTrainConfig, train_prior
        from zscir.train.distributed import report_once

        cfg = PriorTrainConfig(model=model, seed=seed, world_seed=world_seed, threads=threads, device=device,
                               data=data_options(data, val_data, image_root, image_column, text_column, workers=workers,
                                                 allow_pipe=allow_pipe),
                               bf16=parse_precision(precision), heldout=str(heldout) if heldout else None)
        cfg = replace(cfg, **_overrides(steps=steps, batch_size=batch_size, lr=lr, eval_every=eval_every))
        if caption_bank is None and captioner in (None, "retrieval") and data != "world":
            caption_bank = data  # a real gallery is captioned from the captions the prior was trained on
        if captioner_model and captioner is None:
            captioner = "generative"
        cfg.joint = replace(cfg.joint, space=space, **_overrides(fusion_weight=fusion_weight, bank_pairs=bank_pairs,
                                                                 bank_world_seed=world_seed, captioner=captioner,
                                                                 caption_bank=caption_bank,
                                                                 captioner_model=captioner_model))
        cfg.prior = replace(cfg.prior, **_overrides(width=width, layers=layers, prediction_type=prediction_type))
        with data_errors():
            r = train_prior(cfg, out, resume=resume, progress=progress)
        last = r["history"][-1] if r["history"] else {}
        report_once(f"saved {r['out']}: {r['trainable_params']} parameters, {r['train_seconds']:.0f}s, {last}")

    @train_app.command("fusiondiff-adapter")
    def adapter_cmd(
        prior: Path = typer.Option(Path("runs/fusiondiff-prior"), help="Stage-1 checkpoint folder."),
        model: str = typer.Option(None, help="Backbone (default: the built-in or hub model the prior's config "
                                             "names; a model folder must be given here)."),
        out: Path = typer.Option(Path("runs/fusiondiff"), "--out", "-o", help="Output checkpoint folder."),
        max_triplets: int = typer.Option(None, help="Use only the first N training triplets."),
        n_triplets: int = typer.Option(None, help="World HQ triplets generated (training pool + validation)."),
        mode: str = typer.Option("adapter", help="adapter (prior frozen) | full (fine-tune prior + adapter)."),
        blocks: int = typer.Option(None, help="Prior blocks the adapter copies / steers."),
        control: str = typer.Option(None, help="Comma-separated control parts: fused,image,text."),
        steps: int = typer.Option(None), batch_size: int = typer.Option(None), lr: float = typer.Option(None),
        eval_every: int = typer.Option(None), seed: int = typer.Option(0), world_seed: int = typer.Option(0),
        threads: int = typer.Option(None, min=0, help=THREADS_HELP),
        device: str = typer.Option("cpu", help=TRAIN_DEVICE_HELP),
        resume: bool = typer.Option(False, help="Continue from the last checkpoint in --out."),
        progress: bool = typer.Option(True),
        data: str = DATA, val_data: str = VAL_DATA, image_root: Path = IMAGE_ROOT, id_template: str = ID_TEMPLATE,
        precision: Precision = typer.Option(
            Precision.fp32, help=PRECISION_HELP + " Default here fp32: it reproduces the shipped checkpoint."),
    ) -> None:
        """Stage 2: train the Control-Adapter (prior frozen) on the world's synthetic triplets."""
        from zscir.methods.fusiondiff.train_adapter import AdapterTrainConfig, train_adapter
        from zscir.train.distributed import report_once

        cfg = AdapterTrainConfig(prior=str(prior), model=model, seed=seed, world_seed=world_seed, threads=threads,
                                 device=device,
                                 data=data_options(data, val_data, image_root, id_template=id_template),
                                 bf16=parse_precision(precision))
        cfg = replace(cfg, **_overrides(max_triplets=max_triplets, n_triplets=n_triplets, steps=steps,
                                        batch_size=batch_size, lr=lr, eval_every=eval_every))
        parts = tuple(p.strip() for p in control.split(",")) if control else None
        cfg.adapter = replace(cfg.adapter, mode=mode, **_overrides(blocks=blocks, control_parts=parts))
        with data_errors():
            r = train_adapter(cfg, out, resume=resume, progress=progress)
        last = r["history"][-1] if r["history"] else {}
        report_once(f"saved {r['out']}: {r['trainable_params']} trainable parameters, {r['n_train_triplets']} "
                f"triplets, {r['train_seconds']:.0f}s, {last}")
