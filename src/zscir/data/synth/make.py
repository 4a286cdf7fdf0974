"""`zscir data make-triplets`: synthetic training triplets from a user's own image–caption pairs.

Reads any pair spec through `zscir.data.get_pair_data`, runs the chosen generators — ``mine``
(caption-pair mining, LQ, real target images), ``substitute`` (attribute substitution, text targets),
``llm`` (a local causal LM's edits, text targets), ``variants`` (exact edits between variants of one
concept in a real corpus's metadata, HQ, with same-family hard negatives: `zscir.data.synth.variants`) —
optionally renders HQ target images with diffusers
(`zscir.data.synth.hq`) and writes the canonical triplet manifest ``triplets.jsonl`` (docs/DATA.md) with
provenance on every row: ``generator``, ``model``, ``seed``, ``scores``, ``quality``. The images the rows
name are written into ``images/`` of the output folder, so the manifest is self-contained:
``--data OUT/triplets.jsonl`` trains on it.

Pairs are read twice (captions first, then only the images the triplets use) so that memory stays
bounded by the captions, not the pictures.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Sequence

import torch
from tqdm.auto import tqdm

from zscir.data.outdir import OutputFolderError, check_out, prepare_out, start_marker
from zscir.data.real.check import lookup, metadata_by_key
from zscir.data.synth.templates import ATTRIBUTES, MiningConfig, mine_pairs, substitute
from zscir.data.synth.variants import VariantCollector, VariantConfig, record_metadata

logger = logging.getLogger(__name__)

MARKER = "make-triplets.json"
MANIFEST = "triplets.jsonl"
GENERATORS = ("mine", "substitute", "llm", "variants")
#: every name make-triplets writes into its folder (a rebuild deletes only recorded files of these names)
PATTERNS = (MANIFEST, "images/*.png")
#: ``--image-size`` bounds: below 16 px nothing is recognisable; images are decoded at most 512 px
#: (`zscir.data.images`) and HQ pipelines render at most about 1024, so a larger side only costs memory
#: (``--image-size 20000`` was 1.2 GB per picture)
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 2048


@dataclass
class MakeTripletsConfig:
    """Everything one run depends on (written into ``make-triplets.json``)."""

    data: str
    out: str
    generators: tuple[str, ...] = ("mine", "substitute")
    seed: int = 0
    limit: int | None = None  #: pairs read from the data
    model: str = "world-clip"  #: backbone whose text encoder embeds captions for mining
    text_model: str | None = None  #: an HF text model (mean-pooled) instead of the backbone
    mining: MiningConfig = field(default_factory=MiningConfig)
    attributes: tuple[str, ...] = tuple(ATTRIBUTES)
    llm: str | None = None  #: causal LM name for the ``llm`` generator
    llm_max_new_tokens: int = 48
    max_per_generator: int | None = None
    image_size: int = 224  #: side the written images are fitted into
    image_root: str | None = None
    image_column: str | None = None
    text_column: str | None = None
    heldout: str | None = None  #: a held-out folder (`zscir.data.real.heldout`): its items are not used
    heldout_match: str = "concept"  #: "concept" or "ids" (see `zscir.data.real.heldout`)
    variants: VariantConfig = field(default_factory=VariantConfig)

    def check(self) -> None:
        """`DataError` for any impossible option, before a pair is read or a model loaded (option names
        as the CLI spells them)."""
        from zscir.data import DataError

        m = self.mining
        wrong = [f"--{name} must be >= 1, got {value}" for name, value in (
            ("k", m.k), ("max-edits", m.max_edits), ("per-reference", m.per_reference),
            ("limit", self.limit), ("max-per-generator", self.max_per_generator),
            ("llm-max-new-tokens", self.llm_max_new_tokens)) if value is not None and value < 1]
        if not (isinstance(m.min_similarity, (int, float)) and -1.0 <= m.min_similarity <= 1.0):  # NaN fails too
            wrong.append(f"--min-similarity must be a cosine in [-1, 1], got {m.min_similarity}")
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            wrong.append(f"--image-size must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {self.image_size}")
        if self.heldout_match not in ("concept", "ids"):
            wrong.append(f"--heldout-match must be concept or ids, got {self.heldout_match!r}")
        wrong += self.variants.problems()
        if wrong:
            raise DataError("; ".join(wrong))


def embed_texts(texts: Sequence[str], model: str = "world-clip", text_model: str | None = None,
                batch_size: int = 256) -> torch.Tensor:
    """(N, D) unit caption embeddings: a zscir backbone's text tower, or an HF text model mean-pooled."""
    import torch.nn.functional as F

    if not text_model:
        from zscir.backbones import create_backbone

        return create_backbone(model).encode_texts(list(texts), batch_size=batch_size).float()
    from transformers import AutoModel, AutoTokenizer

    tok, enc = AutoTokenizer.from_pretrained(text_model), AutoModel.from_pretrained(text_model).eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            b = tok(list(texts[s:s + batch_size]), padding=True, truncation=True, return_tensors="pt")
            h = enc(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append(F.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1))
    return torch.cat(out).float()


def _heldout(cfg: MakeTripletsConfig):
    """(lists, {key: item metadata}, report) for ``cfg.heldout``; (None, {}, report) without it. Items of
    data without metadata (not a local corpus, shards or manifest) are judged by their caption alone."""
    from zscir.data import DataError
    from zscir.data.real.heldout import HeldoutError, RemovalReport, load_heldout
    from zscir.data.real.sources import RealSources

    report = RemovalReport()
    if not cfg.heldout:
        return None, {}, report
    src = RealSources()
    try:
        lists = load_heldout(cfg.heldout, cfg.heldout_match, src.emoji_test, src.tuxpaint_dir)
    except HeldoutError as e:
        raise DataError(str(e)) from None
    try:
        metas = metadata_by_key(cfg.data)
    except HeldoutError as e:
        logger.warning("--heldout: %s; items are checked by their captions only", e)
        metas = {}
    return lists, metas, report


def _image_name(key: str, used: set[str]) -> str:
    """A file name for an image key, unique among ``used`` (keys may sanitise to the same name)."""
    from zscir.data.real.item import make_key

    stem = PurePosixPath(key.replace("\\", "/")).name.rsplit(".", 1)[0] if ("/" in key or "." in key) else key
    base = make_key(stem)
    name, n = f"images/{base}.png", 1
    while name in used:
        n += 1
        name = f"images/{base}-{n}.png"
    used.add(name)
    return name


def check_generators(cfg: MakeTripletsConfig) -> None:
    """`DataError` for an impossible option or an unknown generator."""
    from zscir.data import DataError

    cfg.check()
    bad = [g for g in cfg.generators if g not in GENERATORS]
    if bad or not cfg.generators:
        raise DataError(f"unknown generator(s) {bad or '(none)'}: expected some of {', '.join(GENERATORS)}")


def read_pairs(cfg: MakeTripletsConfig, pair_data=None, progress: bool = True):
    """First pass: (data, keys, captions, variant collector or None, (held-out lists or None, their removal
    report)). Every source item a generator uses passes through this loop once, so the held-out filter here
    keeps held-out items out of every generator (references, targets and hard negatives)."""
    from zscir.data import get_pair_data

    data = pair_data or get_pair_data(cfg.data, image_root=cfg.image_root, image_column=cfg.image_column,
                                      text_column=cfg.text_column, limit=cfg.limit)
    variants = VariantCollector(cfg.variants, cfg.seed) if "variants" in cfg.generators else None
    lists, metas, removed = _heldout(cfg)
    keys, captions = [], []
    for r in tqdm(data.records(), desc="reading captions", disable=not progress):
        if lists is not None:
            own = r.meta.get("json") if isinstance(r.meta, dict) else None
            meta = own if isinstance(own, dict) and own else lookup(metas, r.key, r.caption)
            hit = lists.match(meta)
            if hit is not None:  # a held-out concept: never a reference, a target or a negative
                removed.add(hit, str(meta.get("source", "?")), r.key)
                continue
        keys.append(r.key)
        captions.append(r.caption)
        if variants is not None:
            variants.add(r.key, r.caption, record_metadata(r.meta))
    if lists is not None:
        logger.info("make-triplets: left out %s", removed.summary())
    return data, keys, captions, variants, (lists, removed)


def count_variant_triplets(cfg: MakeTripletsConfig, pair_data=None, progress: bool = True) -> dict:
    """``--dry-run``: how many ``variants`` triplets the data gives per edit kind; writes nothing."""
    from zscir.data import DataError

    check_generators(cfg)
    if "variants" not in cfg.generators:
        raise DataError("--dry-run counts the variants generator's triplets: add -g variants")
    data, keys, _, variants, _ = read_pairs(cfg, pair_data, progress)
    per_kind = variants.count()
    total = sum(per_kind.values())
    cap = cfg.max_per_generator
    return {"pairs": len(keys), "families": variants.stats.families, "per_kind": per_kind, "total": total,
            "after_cap": min(total, cap) if cap is not None else total, "skipped": dict(variants.stats.skipped),
            "data_problems": data.problems.summary()}


def make_triplets(cfg: MakeTripletsConfig, progress: bool = True, llm_editor=None, hq=None,
                  pair_data=None) -> dict:
    """Run the generators and write ``triplets.jsonl`` + ``images/`` into ``cfg.out``; returns the summary.

    ``llm_editor`` (an `LLMEditor`) and ``hq`` (an `HQTargets`) may be passed ready-made (tests use tiny
    random models); otherwise they are loaded from ``cfg.llm`` / not used. ``pair_data`` overrides
    ``cfg.data`` with an already opened `PairData`.
    """
    from zscir.data import DataError
    from zscir.data.real.corpus import fit_square, png_bytes

    check_generators(cfg)
    if "llm" in cfg.generators and llm_editor is None and not cfg.llm:
        raise DataError("the llm generator needs --llm MODEL_NAME (a local causal LM)")
    out = Path(cfg.out)
    check_out(out, MARKER, "zscir data make-triplets")
    data, keys, captions, variants, (lists, removed) = read_pairs(cfg, pair_data, progress)
    if len(keys) < 2:
        raise DataError(f"{cfg.data}: {len(keys)} usable pairs; make-triplets needs at least 2"
                        + (f" (skipped: {data.problems.summary()})" if data.problems.total else ""))
    rows: list[dict] = []
    rejected: Counter[str] = Counter()
    cap = cfg.max_per_generator
    base = {"seed": cfg.seed}

    if "mine" in cfg.generators:
        emb = embed_texts(captions, cfg.model, cfg.text_model)
        mined = mine_pairs(captions, emb, cfg.mining, cfg.seed)[:cap]
        for m in mined:
            rows.append({"reference": keys[m.ref], "modification": m.modification, "target": keys[m.tgt],
                         "reference_caption": captions[m.ref], "target_caption": captions[m.tgt], "quality": "lq",
                         "source": "make-triplets", "generator": "mine", "model": cfg.text_model or cfg.model,
                         **base, "scores": {"text_similarity": round(m.similarity, 6)},
                         "edits": [{"old": " ".join(e.old), "new": " ".join(e.new)} for e in m.edits]})
    if "substitute" in cfg.generators:
        n = 0
        for k, c in zip(keys, captions):
            if cap is not None and n >= cap:
                break
            s = substitute(c, cfg.seed, k, cfg.attributes)
            if s is None:
                rejected["substitute:no_attribute"] += 1
                continue
            n += 1
            rows.append({"reference": k, "modification": s.modification, "target": "", "reference_caption": c,
                         "target_caption": s.target_caption, "quality": "lq", "source": "make-triplets",
                         "generator": "substitute", "model": None, **base, "scores": {},
                         "attribute": s.attribute, "edits": [{"old": s.old, "new": s.new}]})
    if "llm" in cfg.generators:
        from zscir.data.synth.llm import LLMEditor, ParseError

        editor = llm_editor or LLMEditor.from_pretrained(cfg.llm, max_new_tokens=cfg.llm_max_new_tokens)
        n = 0
        for i, (k, c) in enumerate(tqdm(list(zip(keys, captions)), desc="llm edits", disable=not progress)):
            if cap is not None and n >= cap:
                break
            try:
                edit, target = editor.edit(c, seed=cfg.seed * 1_000_003 + i)
            except ParseError as e:
                rejected[f"llm:{e}"] += 1
                continue
            n += 1
            rows.append({"reference": k, "modification": edit, "target": "", "reference_caption": c,
                         "target_caption": target, "quality": "lq", "source": "make-triplets", "generator": "llm",
                         "model": editor.name, **base, "scores": {}})
    if variants is not None:
        rows.extend(variants.rows(cap))
        rejected.update({f"variants:{k}": v for k, v in variants.stats.skipped.items()})
    if hq is not None:
        rows = hq.run(rows, data, rejected, progress=progress)

    if not rows:
        raise DataError(f"{cfg.data}: no triplet was generated from {len(keys)} pairs "
                        f"(rejected: {dict(rejected) or 'none'}); try other generators or looser options")
    # write: the output folder is prepared only now, so a failing generator leaves nothing behind
    prepare_out(out, MARKER, "zscir data make-triplets", PATTERNS)
    rec = start_marker(out, MARKER, "zscir data make-triplets", ["images"])
    names: dict[str, str] = {}
    used = {f"images/{p.name}" for p in (out / "images").iterdir()}  # left there by you: never written over

    def save(key: str, image) -> None:
        names[key] = _image_name(key, used)
        rec.write_bytes(names[key], png_bytes(image))

    needed = {r["reference"] for r in rows} | {r["target"] for r in rows if r["target"] and not r.get("_generated")}
    needed |= {k for r in rows for k in r.get("hard_negatives", ())}
    for r in tqdm(data.records(), desc="writing images", disable=not progress, total=len(keys)):
        if r.key in needed and r.key not in names:
            save(r.key, fit_square(r.image, cfg.image_size))
    if hq is not None:
        for key, image in hq.images.items():
            save(key, image)
    missing = needed - set(names)
    if missing:  # an image that decoded in the first pass and not in the second (a changed file)
        rejected["image_vanished"] += sum(1 for r in rows if r["reference"] in missing or r["target"] in missing)
        rows = [r for r in rows if r["reference"] not in missing and r["target"] not in missing]
    for r in rows:
        if "hard_negatives" in r:  # ids of the written images (a vanished one is left out)
            r["hard_negatives"] = [names[k] for k in r["hard_negatives"] if k in names]
    with open(rec.claim(MANIFEST), "w", encoding="utf-8") as f:
        for i, r in enumerate(rows):
            r = {k: v for k, v in r.items() if not k.startswith("_")}
            r = {"id": f"{r['generator']}-{i}", **r, "reference": names[r["reference"]],
                 "target": names[r["target"]] if r["target"] else ""}
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    rec.done(MANIFEST)
    per_gen = Counter(r["generator"] for r in rows)
    per_q = Counter(r["quality"] for r in rows)
    per_edit = Counter(r["edit"]["kind"] for r in rows if r["generator"] == "variants")
    summary = {"created_by": "zscir data make-triplets", "complete": True, "dirs": ["images"],
               "config": asdict(cfg), "pairs": len(keys), "triplets": len(rows), "per_generator": dict(per_gen),
               "per_quality": dict(per_q),
               **({"per_edit": dict(sorted(per_edit.items()))} if per_edit else {}), "rejected": dict(rejected),
               "data_problems": data.problems.summary(),
               "manifest": MANIFEST, "files": sorted(set(names.values())) + [MANIFEST],
               "heldout": None if lists is None else {**lists.describe(), **removed.as_dict(),
                                                      "summary": removed.summary()}}
    rec.finish(summary, indent=1, ensure_ascii=False)
    return summary


__all__ = ["MakeTripletsConfig", "make_triplets", "count_variant_triplets", "read_pairs", "check_generators",
           "embed_texts", "OutputFolderError", "GENERATORS"]
