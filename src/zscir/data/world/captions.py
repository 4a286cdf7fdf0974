"""Captions and referring expressions generated from the scene graph.

Training captions are deliberately varied (full / relational / short / positional / listing /
counting forms, with and without background, in random object order) so that a text encoder
trained on them learns attribute *binding* rather than one sentence template.  ``canonical_caption``
is the opposite: one fixed, complete form, used as an oracle description and as the query of the
caption-mined (LQ) triplets.  All text is lowercase and spells numbers out (no digits), matching
what the edit phrasings produce.
"""

from __future__ import annotations

import random
from collections import Counter

from .scene import Obj, Scene
from .vocab import POSITION_PHRASES, number_word, plural

CAPTION_STYLES: tuple[str, ...] = ("full", "relational", "short", "positional", "listing", "count")

_PREFIXES = ("", "", "", "a picture of ", "an image of ", "a drawing of ")
_BG_FORMS = ("on a {bg} background", "against a {bg} background", "with a {bg} background",
             "on {bg}")


def article(phrase: str) -> str:
    """Prefix ``phrase`` with "a" or "an"."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def describe(obj: Obj, size: bool = True, texture: bool = True, color: bool = True) -> str:
    """Noun phrase without article: "large striped red circle" (plain texture is implicit)."""
    words = []
    if size:
        words.append(obj.size)
    if texture and obj.texture != "plain":
        words.append(obj.texture)
    if color:
        words.append(obj.color)
    words.append(obj.shape)
    return " ".join(words)


def relation(a: Obj, b: Obj) -> str:
    """Spatial relation of ``a`` relative to ``b`` ("to the left of", "above and to the right of")."""
    vert = "above" if a.row < b.row else "below" if a.row > b.row else ""
    horiz = "to the left of" if a.col < b.col else "to the right of" if a.col > b.col else ""
    if vert and horiz:
        return f"{vert} and {horiz}"
    return vert or horiz


def join_words(parts: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _groups(objs: tuple[Obj, ...], size: bool, texture: bool) -> list[tuple[int, str, str]]:
    """Group objects that read identically: (count, singular phrase, plural phrase)."""
    keys = [describe(o, size=size, texture=texture) for o in objs]
    counts = Counter(keys)
    out: list[tuple[int, str, str]] = []
    seen: set[str] = set()
    for o, k in zip(objs, keys):
        if k in seen:
            continue
        seen.add(k)
        plural_phrase = k[: -len(o.shape)] + plural(o.shape)
        out.append((counts[k], k, plural_phrase))
    return out


def _counted(groups: list[tuple[int, str, str]]) -> list[str]:
    return [article(s) if n == 1 else f"{number_word(n)} {p}" for n, s, p in groups]


def _bg(scene: Scene, rng: random.Random) -> str:
    return rng.choice(_BG_FORMS).format(bg=scene.background)


def referring_expression(scene: Scene, obj: Obj, rng: random.Random | None = None,
                         extra_color_prob: float = 0.5) -> str:
    """Shortest "the ..." phrase that identifies ``obj`` among ``scene.objects``.

    The shape is always named; colour, then size, then texture are added only while needed to
    disambiguate, and the position as a last resort (identical twins).  With an ``rng`` the colour
    is sometimes added although not needed, because people over-specify too.
    """
    others = [o for o in scene.objects if o != obj]
    add_color = rng is not None and rng.random() < extra_color_prob
    for size, texture, color in ((False, False, add_color), (False, False, True),
                                 (True, False, True), (True, True, True)):
        phrase = describe(obj, size=size, texture=texture, color=color)
        if not any(describe(o, size=size, texture=texture, color=color) == phrase for o in others):
            return "the " + phrase
    return f"the {describe(obj, size=False, texture=False)} {POSITION_PHRASES[obj.cell]}"


def canonical_caption(scene: Scene) -> str:
    """One fixed, complete description: every object with all attributes and its position, in
    row-major order, then the background."""
    parts = [f"{article(describe(o))} {POSITION_PHRASES[o.cell]}" for o in scene.objects]
    body = join_words(parts) if parts else "nothing"
    return f"{body} on a {scene.background} background"


def _full(scene: Scene, rng: random.Random) -> str:
    objs = list(scene.objects)
    if len(objs) == 2:
        a, b = rng.sample(objs, 2)
        text = f"{article(describe(a))} {relation(a, b)} {article(describe(b))}"
    else:
        rng.shuffle(objs)
        text = join_words([f"{article(describe(o))} {POSITION_PHRASES[o.cell]}" for o in objs])
    return f"{text} {_bg(scene, rng)}"


def _relational(scene: Scene, rng: random.Random) -> str:
    objs = list(scene.objects)
    rng.shuffle(objs)
    if len(objs) == 1:
        o = objs[0]
        return f"{article(describe(o, size=rng.random() < 0.5))} {POSITION_PHRASES[o.cell]}"
    anchor = objs[0]
    parts = [f"{article(describe(o))} {relation(o, anchor)} the {describe(anchor, size=False)}"
             for o in objs[1:]]
    return join_words(parts)


def _short(scene: Scene, rng: random.Random) -> str:
    objs = list(scene.objects)
    rng.shuffle(objs)
    groups = _groups(tuple(objs), size=False, texture=False)
    return join_words([s if n == 1 else f"{number_word(n)} {p}" for n, s, p in groups])


def _positional(scene: Scene, rng: random.Random) -> str:
    objs = list(scene.objects)
    rng.shuffle(objs)
    text = join_words([f"{article(describe(o, size=rng.random() < 0.7))} {POSITION_PHRASES[o.cell]}"
                       for o in objs])
    return f"{text} {_bg(scene, rng)}" if rng.random() < 0.5 else text


def _listing(scene: Scene, rng: random.Random) -> str:
    objs = list(scene.objects)
    rng.shuffle(objs)
    groups = _groups(tuple(objs), size=True, texture=True)
    lead = rng.choice(("there is ", "")) if groups[0][0] == 1 else rng.choice(("there are ", ""))
    text = lead + join_words(_counted(groups))
    return f"{text} {_bg(scene, rng)}" if rng.random() < 0.5 else text


def _count(scene: Scene, rng: random.Random) -> str:
    n = len(scene.objects)
    noun = "shape" if n == 1 else "shapes"
    groups = _groups(scene.objects, size=False, texture=False)
    return f"{number_word(n)} {noun} on a {scene.background} background: " + join_words(_counted(groups))


_STYLE_FNS = {"full": _full, "relational": _relational, "short": _short,
              "positional": _positional, "listing": _listing, "count": _count}


def caption(scene: Scene, rng: random.Random, style: str | None = None) -> str:
    """A caption of ``scene`` in ``style`` (one of :data:`CAPTION_STYLES`; random if None)."""
    if not scene.objects:
        return f"an empty {scene.background} background"
    st = style if style is not None else rng.choice(CAPTION_STYLES)
    if st not in _STYLE_FNS:
        raise ValueError(f"unknown caption style {st!r}; expected one of {CAPTION_STYLES}")
    text = _STYLE_FNS[st](scene, rng)
    if st in ("full", "relational", "positional"):
        text = rng.choice(_PREFIXES) + text
    return text


def caption_variants(scene: Scene, rng: random.Random, n: int = 4) -> tuple[str, ...]:
    """``n`` distinct-style captions; the first is always the full form so that every pair has at
    least one caption mentioning every object's attributes."""
    styles = ["full"] + rng.sample([s for s in CAPTION_STYLES if s != "full"], k=min(n - 1, len(CAPTION_STYLES) - 1))
    return tuple(caption(scene, rng, s) for s in styles[:n])
