"""`zscir train lit`: the projection heads of a LiT backbone (frozen pretrained towers)."""

from __future__ import annotations

from pathlib import Path

import typer

from zscir.threads import THREADS_HELP
from zscir.cli.common import fail
from zscir.cli.data import ALLOW_PIPE
from zscir.cli.options import OUT


def register_train(train_app: typer.Typer) -> None:
    @train_app.command("lit")
    def lit_cmd(
        data: str = typer.Option("world", help="Pair dataset SPEC: 'world' (procedural shapes), WebDataset "
                                               "shards, a manifest, hf:... (docs/DATA.md)."),
        out: Path = typer.Option(Path("runs/lit"), *OUT,
                                 help="Output model folder (load it with --model local-dir:OUT)."),
        steps: int = typer.Option(None, help="Training steps of the heads (default 2000)."),
        batch_size: int = typer.Option(None, help="Distinct images per batch (default 256)."),
        lr: float = typer.Option(None, help="AdamW learning rate (default 1e-3)."),
        warmup: int = typer.Option(None, min=0, help="Linear warm-up steps before the cosine decay (default 100)."),
        n_pairs: int = typer.Option(2000, help="World pictures (--data world only)."),
        image_size: int = typer.Option(None, help="Image tower input side in pixels (default 160)."),
        embed_dim: int = typer.Option(None, help="Joint embedding width (default 512)."),
        head_hidden: int = typer.Option(None, help="Hidden width of the MLP heads; 0 = linear (default 1024)."),
        text_model: str = typer.Option(None, help="HF AutoModel text tower: hub id or folder "
                                                  "(default sentence-transformers/all-MiniLM-L6-v2)."),
        text_tower: str = typer.Option("locked", help="What of the text tower trains: locked (heads only), "
                                                      "lora (a LoRA delta) or full (all its weights but the "
                                                      "word embeddings)."),
        lora_rank: int = typer.Option(None, help="LoRA rank with --text-tower lora (default 8)."),
        lora_alpha: float = typer.Option(None, help="LoRA alpha with --text-tower lora (default 16)."),
        text_lr: float = typer.Option(None, help="Learning rate of the tuned text tower's weights (default "
                                                 "5e-4 for lora, 5e-5 for full)."),
        image_unlock_blocks: int = typer.Option(0, help="Train the image tower's last K blocks (and its head "
                                                        "conv) too; the cache keeps the input of the first."),
        text_unlock_layers: int = typer.Option(None, help="With --text-tower lora/full: train only the text "
                                                          "tower's last K layers; the frozen first layers run "
                                                          "once per caption (cached). Default: all layers."),
        image_lr: float = typer.Option(None, help="Learning rate of the unlocked image blocks (default 1e-4)."),
        caption_augment: str = typer.Option("none", help="none, or metadata: more phrasings per picture "
                                                         "from its metadata (names, keywords, style)."),
        version: str = typer.Option(None, help="A version label saved in config.json (shown by `zscir list "
                                               "models` and /health when shipped as a built-in)."),
        image_tower: str = typer.Option(None, help="Registered image tower, optionally NAME:WEIGHTS "
                                                   "(default efficientnet-lite0)."),
        cache_dir: Path = typer.Option(None, help="Frozen-feature cache folder (default $ZSCIR_CACHE/lit)."),
        seed: int = typer.Option(0),
        threads: int = typer.Option(None, min=0, help=THREADS_HELP),
        device: str = typer.Option("cpu", help="Device of the towers and heads (e.g. cuda)."),
        progress: bool = typer.Option(True, help="Show progress bars."),
        allow_pipe: bool = ALLOW_PIPE,
    ) -> None:
        """Train LiT projection heads contrastively on (image, caption) pairs; the towers stay frozen unless
        --text-tower lora/full or --image-unlock-blocks K says otherwise."""
        from dataclasses import replace

        from zscir.backbones.lit import TEXT_TUNINGS, LiTConfig
        from zscir.cache import cache_dir as zscir_cache_dir
        from zscir.train.lit import LIT_RUN_FILES, LiTTrainConfig, pair_data, train_lit
        from zscir.train.run_folder import check_run

        if text_tower not in TEXT_TUNINGS:
            fail(f"--text-tower must be one of {', '.join(TEXT_TUNINGS)}, got {text_tower!r} (the text tower's "
                 "name is given with --text-model)")
        if text_tower != "lora" and (lora_rank is not None or lora_alpha is not None):
            fail("--lora-rank and --lora-alpha need --text-tower lora")
        if text_unlock_layers is not None and text_tower == "locked":
            fail("--text-unlock-layers needs --text-tower lora or full (the text tower is locked)")
        if text_unlock_layers is not None and text_unlock_layers < 1:
            fail(f"--text-unlock-layers must be at least 1 (the last K layers train), got {text_unlock_layers}")
        try:
            model = replace(LiTConfig(), **{k: v for k, v in dict(
                image_size=image_size, embed_dim=embed_dim, head_hidden=head_hidden, text_tower=text_model,
                image_tower=image_tower, text_tuning=text_tower, lora_rank=lora_rank, lora_alpha=lora_alpha,
                image_unlocked_blocks=image_unlock_blocks, text_unlocked_layers=text_unlock_layers,
                version=version).items() if v is not None})
            cfg = replace(LiTTrainConfig(seed=seed, threads=threads, device=device, model=model), **{
                k: v for k, v in dict(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, text_lr=text_lr, image_lr=image_lr,
                                      caption_augment=caption_augment).items() if v is not None})
        except ValueError as e:  # ModelConfigError: "lora_rank must be an integer in [1, 1024], got 0"
            fail(str(e))
        try:
            check_run(out, "zscir train lit", LIT_RUN_FILES)  # before the data is opened (train_lit checks again)
            pairs = pair_data(data, n_pairs=n_pairs, seed=seed, image_size=model.image_size, allow_pipe=allow_pipe,
                              augment=cfg.caption_augment)
            r = train_lit(pairs, out, cfg, cache_dir=cache_dir or zscir_cache_dir("lit"), progress=progress)
        except (ValueError, FileNotFoundError, OSError) as e:
            fail(str(e))
        m = r["metrics"]
        typer.echo(f"saved {r['out']} ({r['data']['images']} images, {r['data']['texts']} captions; "
                   f"{r['seconds_per_step']:.2f} s/step)")
        if m:
            typer.echo(f"held-out ({m['n_val']} images): image→text R@1 {m['i2t_R@1']:.1f} R@5 {m['i2t_R@5']:.1f}, "
                       f"text→image R@1 {m['t2i_R@1']:.1f} R@5 {m['t2i_R@5']:.1f} "
                       f"(chance R@1 {m['chance_R@1']:.2f}, R@5 {m['chance_R@5']:.2f})")
