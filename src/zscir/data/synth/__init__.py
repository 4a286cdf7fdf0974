"""Synthetic triplets from a user's pair data (`zscir data make-triplets`).

* `templates` — caption-pair mining (LQ, real targets) and attribute substitution (text targets);
* `llm` — optional local causal LM edits with a strict parser;
* `hq` — optional diffusers target images (InstructPix2Pix / text-to-image) with CLIP-score filters;
* `make` — the run: reads pairs, writes the canonical triplet manifest with provenance.
"""
