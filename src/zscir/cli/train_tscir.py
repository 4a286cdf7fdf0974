"""`zscir train tscir-stage1` and `zscir train tscir-stage2` (registered by `zscir.cli.train`).

Both run data-parallel under ``torchrun --nproc-per-node=N -m zscir train tscir-stage1 ...`` (progress bars
and output on rank 0 only; ``--batch-size`` is the global batch), see docs/SCALING.md.
"""

from __future__ import annotations

from pathlib import Path

import typer

from zscir.cli.data import ALLOW_PIPE, DATA, ID_TEMPLATE, IMAGE_COLUMN, IMAGE_ROOT, TEXT_COLUMN, VAL_DATA, WORKERS, data_errors, data_options
from zscir.threads import THREADS_HELP
from zscir.train.precision import PRECISION_HELP, Precision, parse_precision


def _layers(text: str | None) -> list[int] | None:
    """"0,1" → [0, 1]; "" → []; None → None (use the default)."""
    if text is None:
        return None
    return [int(x) for x in text.replace(" ", "").split(",") if x]


def register_train(train_app: typer.Typer) -> None:
    @train_app.command("tscir-stage1")
    def stage1_cmd(
        out: Path = typer.Option(Path("runs/tscir-stage1"), "--out", "-o", help="Output checkpoint folder."),
        model: str = typer.Option("world-clip", help="Backbone (any name of the backbone layer)."),
        pic2word: bool = typer.Option(False, "--pic2word", help="Pic2Word: φ only, no VSI, no soft alignment."),
        vsi: bool = typer.Option(True, help="Visual Semantic Injection (--no-vsi for the ablation)."),
        vsi_layers: str = typer.Option(None, help="Comma-separated text layers with VSI (default 0,1)."),
        soft: bool = typer.Option(True, help="Soft text alignment (--no-soft for the ablation)."),
        soft_weight: float = typer.Option(None, help="Weight of the soft alignment loss."),
        steps: int = typer.Option(None), batch_size: int = typer.Option(None), lr: float = typer.Option(None),
        n_pairs: int = typer.Option(None, help="World training pairs."),
        eval_every: int = typer.Option(None), seed: int = typer.Option(0), world_seed: int = typer.Option(0),
        threads: int = typer.Option(None, min=0, help=THREADS_HELP),
        device: str = typer.Option("cpu"),
        resume: bool = typer.Option(False, help="Continue from the last checkpoint in --out."),
        progress: bool = typer.Option(True, help="Show progress bars."),
        data: str = DATA, val_data: str = VAL_DATA, image_root: Path = IMAGE_ROOT, image_column: str = IMAGE_COLUMN,
        text_column: str = TEXT_COLUMN, workers: int = WORKERS, allow_pipe: bool = ALLOW_PIPE,
        streaming: bool = typer.Option(False, "--streaming/--cached-features", help="Encode each step's images "
                                       "(data larger than RAM) instead of encoding the whole set once."),
        precision: Precision = typer.Option(Precision.auto, help=PRECISION_HELP),
    ) -> None:
        """Stage I (mapping): train φ (+ VSI, + soft text alignment) on world image–caption pairs."""
        from zscir.methods.tscir.config import MappingConfig, Stage1Config
        from zscir.methods.tscir.stage1 import train_stage1
        from zscir.train.distributed import report_once

        mapping = MappingConfig()
        if vsi_layers is not None:
            mapping.vsi_layers = _layers(vsi_layers)
        if pic2word or not vsi:
            mapping.vsi_layers = []
        cfg = Stage1Config(model=model, method="pic2word" if pic2word else "tscir", mapping=mapping, seed=seed,
                           world_seed=world_seed, threads=threads, device=device,
                           data=data_options(data, val_data, image_root, image_column, text_column, workers=workers,
                                             streaming=streaming or None, allow_pipe=allow_pipe),
                           bf16=parse_precision(precision))
        if soft_weight is not None:
            cfg.soft_weight = soft_weight
        if pic2word or not soft:
            cfg.soft_weight = 0.0
        for k, v in dict(steps=steps, batch_size=batch_size, lr=lr, n_pairs=n_pairs, eval_every=eval_every).items():
            if v is not None:
                setattr(cfg, k, v)
        with data_errors():
            r = train_stage1(cfg, out, resume=resume, progress=progress)
        report_once(f"saved {r['out']} ({r['train_s']:.0f}s of training); held-out pairs: {r['metrics']}")

    @train_app.command("tscir-stage2")
    def stage2_cmd(
        stage1: Path = typer.Option(..., help="Stage I checkpoint folder (from tscir-stage1)."),
        out: Path = typer.Option(Path("runs/tscir"), "--out", "-o",
                                 help="Output checkpoint folder (includes Stage I)."),
        quality: str = typer.Option("hq", help="hq (rendered targets) | lq (caption-mined targets)."),
        max_triplets: int = typer.Option(None, help="Training triplets (first N of the world's sequence)."),
        adapter: str = typer.Option("bottleneck", help="bottleneck | lora (peft)."),
        adapter_layers: str = typer.Option(None, help="Comma-separated text layers (default: all)."),
        bottleneck: int = typer.Option(None), lora_rank: int = typer.Option(None),
        template: str = typer.Option(None, help="Query prompt with one $ and one {}."),
        hard_negatives: int = typer.Option(None, help="Mined negatives per query (0 = off, default)."),
        hn_refresh: int = typer.Option(None, help="Re-rank the negatives every N steps."),
        steps: int = typer.Option(None), batch_size: int = typer.Option(None), lr: float = typer.Option(None),
        eval_every: int = typer.Option(None), seed: int = typer.Option(0), world_seed: int = typer.Option(0),
        model: str = typer.Option("", help="Backbone (default: the Stage I checkpoint's)."),
        threads: int = typer.Option(None, min=0, help=THREADS_HELP), device: str = typer.Option("cpu"),
        resume: bool = typer.Option(False), progress: bool = typer.Option(True),
        data: str = DATA, val_data: str = VAL_DATA, image_root: Path = IMAGE_ROOT, id_template: str = ID_TEMPLATE,
        precision: Precision = typer.Option(Precision.auto, help=PRECISION_HELP),
    ) -> None:
        """Stage II (composing): train composing adapters on world triplets, Stage I frozen."""
        from zscir.methods.tscir.config import AdapterConfig, Stage2Config
        from zscir.methods.tscir.stage2 import train_stage2
        from zscir.train.distributed import report_once

        if quality not in ("hq", "lq"):
            raise typer.BadParameter("--quality must be hq or lq")
        acfg = AdapterConfig(kind=adapter, layers=_layers(adapter_layers))
        if bottleneck is not None:
            acfg.bottleneck = bottleneck
        if lora_rank is not None:
            acfg.lora_rank = lora_rank
        cfg = Stage2Config(stage1=str(stage1), model=model, adapter=acfg, quality=quality, seed=seed,
                           world_seed=world_seed, threads=threads, device=device,
                           data=data_options(data, val_data, image_root, id_template=id_template),
                           bf16=parse_precision(precision))
        for k, v in dict(max_triplets=max_triplets, template=template, hard_negatives=hard_negatives,
                         hn_refresh=hn_refresh, steps=steps, batch_size=batch_size, lr=lr,
                         eval_every=eval_every).items():
            if v is not None:
                setattr(cfg, k, v)
        with data_errors():
            r = train_stage2(cfg, out, resume=resume, progress=progress)
        report_once(f"saved {r['out']} ({r['train_s']:.0f}s of training); validation: {r['metrics']}")
