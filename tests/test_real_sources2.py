"""The npm emoji sets, flag-icons, freedesktop icon themes and the bounded SVG rasteriser (issue 22 §1).

Every reader runs on a tiny fake package in the real layout built in tmp_path; the installed packages are
read too when present (skip otherwise). The SVG rasteriser gets hostile files: external references that
must not be fetched, entity bombs, huge or degenerate sizes, malformed XML — each is refused or rendered
bounded, never a hang, never a fetch.
"""

from __future__ import annotations

import json
import os
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zscir.data.real.item import SourceMissing
from zscir.data.real.sources import RealSources

try:  # the SVG renderer: pip install cairosvg (the [real]/[dev] extras) + Debian's libcairo2
    import cairosvg  # noqa: F401
except (ImportError, OSError) as e:  # cairocffi raises OSError without libcairo2
    pytest.skip(f"cairosvg is not usable: {e}", allow_module_level=True)

from zscir.data.real import emoji_sets, flags, icons  # noqa: E402
from zscir.data.real.svg import SvgLimits, SvgRejected, rasterise_svg  # noqa: E402

EMOJI_TEST = """\
# group: People & Body
# subgroup: hand-fingers-closed
1F44D                                                  ; fully-qualified     # 👍 E0.6 thumbs up
1F44D 1F3FB                                            ; fully-qualified     # 👍🏻 E1.0 thumbs up: light skin tone
1F44D 1F3FF                                            ; fully-qualified     # 👍🏿 E1.0 thumbs up: dark skin tone
# subgroup: person
1F468 200D 1F9B0                                       ; fully-qualified     # 👨‍🦰 E11.0 man: red hair
1F468 1F3FF 200D 1F9B0                                 ; fully-qualified     # 👨🏿‍🦰 E11.0 man: dark skin tone, red hair
# group: Smileys & Emotion
# subgroup: heart
2764 FE0F                                              ; fully-qualified     # ❤️ E0.6 red heart
2764                                                   ; unqualified         # ❤ E0.6 red heart
# group: Objects
# subgroup: science
1F9EE                                                  ; fully-qualified     # 🧮 E11.0 abacus
# group: Flags
# subgroup: country-flag
1F1EF 1F1F5                                            ; fully-qualified     # 🇯🇵 E0.6 flag: Japan
# subgroup: subdivision-flag
1F3F4 E0067 E0062 E0065 E006E E0067 E007F              ; fully-qualified     # 🏴 E5.0 flag: England
"""

SVG_RED = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" fill="#{c}"/></svg>'


def _png(path: Path, rgb=(200, 30, 30), size=(64, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", size, (*rgb, 255)).save(path)
    return path


def _svg(path: Path, colour: str = "c81e1e", text: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text is not None else SVG_RED.format(c=colour))
    return path


@pytest.fixture
def pkgs(tmp_path) -> RealSources:
    """Fake npm packages + emoji-test.txt + an icons folder, in the real packages' layouts."""
    test = tmp_path / "emoji-test.txt"
    test.write_text(EMOJI_TEST, encoding="utf-8")
    npm = tmp_path / "node_modules"
    # emoji-datasource-google: emoji.json + img/google/64
    g = npm / "emoji-datasource-google"
    rows = [
        {"name": "THUMBS UP SIGN", "unified": "1F44D", "image": "1f44d.png", "short_name": "+1",
         "short_names": ["+1", "thumbsup"], "has_img_google": True,
         "skin_variations": {"1F3FB": {"unified": "1F44D-1F3FB", "image": "1f44d-1f3fb.png", "has_img_google": True},
                             "1F3FF": {"unified": "1F44D-1F3FF", "image": "1f44d-1f3ff.png", "has_img_google": False}}},
        {"name": "HEAVY BLACK HEART", "unified": "2764-FE0F", "image": "2764-fe0f.png", "short_name": "heart",
         "short_names": ["heart"], "has_img_google": True},
        {"name": "NEWER THAN UNICODE-DATA", "unified": "1FAE8", "image": "1fae8.png", "short_names": ["shaking_face"],
         "has_img_google": True},
    ]
    (g / "img/google/64").mkdir(parents=True)
    (g / "emoji.json").write_text(json.dumps(rows))
    (g / "LICENSE").write_text("MIT fake")
    for i, f in enumerate(("1f44d.png", "1f44d-1f3fb.png", "1f44d-1f3ff.png", "2764-fe0f.png", "1fae8.png")):
        _png(g / "img/google/64" / f, (40 * i, 80, 120))
    # openmoji: data/openmoji.json + color/svg + black/svg
    o = npm / "openmoji"
    om = [{"hexcode": "1F44D", "annotation": "thumbs up", "group": "people-body", "tags": "good, hand",
           "openmoji_tags": "like, good", "openmoji_author": "A"},
          {"hexcode": "1F44D-1F3FF", "annotation": "thumbs up: dark skin tone", "group": "people-body", "tags": "",
           "openmoji_tags": ""},
          {"hexcode": "E000", "annotation": "openmoji", "group": "extras-openmoji", "tags": "", "openmoji_tags": "logo"},
          {"hexcode": "1F3FB", "annotation": "light skin tone", "group": "component", "tags": "", "openmoji_tags": ""}]
    (o / "data").mkdir(parents=True)
    (o / "data/openmoji.json").write_text(json.dumps(om))
    (o / "LICENSE.txt").write_text("CC-BY-SA-4.0 fake")
    for i, r in enumerate(om):
        _svg(o / "color/svg" / f"{r['hexcode']}.svg", f"{20 * i:02x}aa33")
        _svg(o / "black/svg" / f"{r['hexcode']}.svg", "000000")
    # @twemoji/svg: code points as file names (no fe0f in "2764")
    t = npm / "@twemoji/svg"
    for i, name in enumerate(("1f44d", "2764", "1f1ef-1f1f5", "zzz-not-hex")):
        _svg(t / f"{name}.svg", f"33{20 * i:02x}99")
    (t / "license").write_text("MIT fake")
    # fluentui-emoji: slugs with skin-tone suffixes
    f = npm / "fluentui-emoji/icons"
    for i, name in enumerate(("thumbs-up-default", "thumbs-up-dark", "man-red-hair-default", "man-red-hair-dark",
                              "abacus", "red-heart", "unknown-thing")):
        _svg(f / "modern" / f"{name}.svg", f"99{20 * i:02x}33")
        _svg(f / "flat" / f"{name}.svg", f"55{20 * i:02x}33")
    # flag-icons
    fl = npm / "flag-icons"
    (fl / "flags/4x3").mkdir(parents=True)
    (fl / "country.json").write_text(json.dumps([
        {"code": "jp", "name": "Japan", "capital": "Tokyo", "continent": "Asia", "iso": True},
        {"code": "gb-eng", "name": "England", "iso": False},
        {"code": "asean", "name": "ASEAN", "iso": False},
        {"code": "../../etc", "name": "Evil", "iso": False}]))
    (fl / "LICENSE").write_text("MIT fake")
    _svg(fl / "flags/4x3/jp.svg", text='<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 640 480">'
         '<rect width="640" height="480" fill="#fff"/><circle cx="320" cy="240" r="144" fill="#bc002d"/></svg>')
    _svg(fl / "flags/4x3/gb-eng.svg", "ffffff")
    _svg(fl / "flags/4x3/asean.svg", "0033aa")
    # an icon theme (as Papirus lays it out: size/context/name.svg)
    ic = tmp_path / "icons/Papirus"
    _svg(ic / "16x16/places/folder-music.svg", "111111")
    _svg(ic / "64x64/places/folder-music.svg", "2266cc")
    _svg(ic / "48x48/places/folder-music.svg", "444444")
    _svg(ic / "64x64/apps/org.gnome.Calculator.svg", "aa5500")
    _svg(ic / "64x64/mimetypes/application-pdf.svg", "cc0000")
    _svg(ic / "64x64/mimetypes/text-x-python.svg", "3366aa")
    _svg(ic / "64x64/actions/edit-copy.svg", "00aa55")
    _svg(ic / "64x64/actions/edit-copy-symbolic.svg", "000000")
    _svg(ic / "symbolic/actions/edit-cut-symbolic.svg", "000000")
    _svg(ic / "64x64@2x/actions/go-up.svg", "000000")
    os.symlink("folder-music.svg", ic / "64x64/places/folder-audio.svg")  # an alias: one drawing
    secret = _png(tmp_path / "secret.png")
    os.symlink(secret, ic / "64x64/apps/leak.svg")  # a link leaving the themes: skipped
    return RealSources(emoji_test=str(test), npm_dir=str(npm), icons_dir=str(tmp_path / "icons"))


def _by(items, field="key"):
    return {getattr(it, field) if field != "file" else it.extra["file"]: it for it in items}


# --- emoji sets -----------------------------------------------------------------------------------------


def test_datasource_reader_uses_cldr_names_and_skips_missing_images(pkgs):
    items = _by(emoji_sets.read_datasource("google", pkgs.npm_dir, pkgs.emoji_test))
    assert set(items) == {"google-1f44d", "google-1f44d-1f3fb", "google-2764"}  # no has_img, no CLDR name: out
    up, light, heart = items["google-1f44d"], items["google-1f44d-1f3fb"], items["google-2764"]
    assert up.caption == "thumbs up" and up.concept == "thumbs up" and up.variant == {}
    assert light.caption == "thumbs up: light skin tone" and light.variant == {"name": "light skin tone",
                                                                                "skin_tone": "light"}
    assert light.extra["emoji_id"] == "1f44d-1f3fb" and light.extra["style"] == "google"
    assert heart.extra["emoji_id"] == "2764" and heart.caption == "red heart"  # fe0f dropped
    assert up.extra["keywords"] == ["+1", "thumbsup"] and up.licence == "Apache-2.0"
    assert up.load().size == (64, 64)


def test_openmoji_reader_styles_keywords_and_extras(pkgs):
    items = _by(emoji_sets.read_openmoji(pkgs.npm_dir, pkgs.emoji_test))
    assert set(items) == {"openmoji-1f44d", "openmoji-1f44d-1f3ff", "openmoji-e000",
                          "openmoji-black-1f44d", "openmoji-black-1f44d-1f3ff", "openmoji-black-e000"}
    up = items["openmoji-1f44d"]
    assert up.caption == "thumbs up" and up.extra["style"] == "openmoji" and up.licence == "CC-BY-SA-4.0"
    assert up.extra["keywords"] == ["good", "hand", "like"]
    assert items["openmoji-black-1f44d-1f3ff"].variant["skin_tone"] == "dark"
    assert items["openmoji-black-1f44d"].extra["style"] == "openmoji-black"
    extra = items["openmoji-e000"]
    assert extra.caption == "openmoji" and extra.extra["emoji_id"] == "e000" and extra.extra["keywords"] == ["logo"]
    im = up.load()
    assert im.mode == "RGBA" and max(im.size) == 256


def test_twemoji_reader_names_files_by_code_points(pkgs):
    items = _by(emoji_sets.read_twemoji(pkgs.npm_dir, pkgs.emoji_test))
    assert set(items) == {"twemoji-1f44d", "twemoji-2764", "twemoji-1f1ef-1f1f5"}
    assert items["twemoji-2764"].caption == "red heart" and items["twemoji-2764"].extra["emoji_id"] == "2764"
    assert items["twemoji-1f1ef-1f1f5"].concept == "flag" and items["twemoji-1f1ef-1f1f5"].variant == {"name": "Japan"}


def test_fluent_reader_maps_slugs_and_skin_tones(pkgs):
    items = list(emoji_sets.read_fluent(pkgs.npm_dir, pkgs.emoji_test))
    got = {(it.extra["style"], it.extra["emoji_id"]): it for it in items}
    assert {k[0] for k in got} == {"fluent-color", "fluent-flat"}
    man = got[("fluent-color", "1f468-1f3ff-200d-1f9b0")]
    assert man.caption == "man: dark skin tone, red hair" and man.concept == "man"
    assert man.variant == {"name": "dark skin tone, red hair", "skin_tone": "dark"}
    assert got[("fluent-flat", "1f44d")].caption == "thumbs up"
    assert got[("fluent-color", "1f9ee")].caption == "abacus"
    assert got[("fluent-color", "2764")].caption == "red heart"
    assert len(items) == 2 * 6  # "unknown-thing" has no name


@pytest.mark.parametrize("name, want", [("A button (blood type)", "a-button-blood-type"),
                                        ("piñata", "pinata"), ("man’s shoe", "mans-shoe"),
                                        ("1st place medal", "1st-place-medal"), ("flag: Côte d’Ivoire", "flag-cote-divoire")])
def test_fluent_slug(name, want):
    assert emoji_sets.slug(name) == want


def test_one_emoji_is_one_concept_in_every_style(pkgs):
    """The held-out filter's contract: every style of a sequence shares caption, concept and emoji_id."""
    from zscir.data.real.split import ConceptSplit, item_family

    everything = (list(emoji_sets.read_datasource("google", pkgs.npm_dir, pkgs.emoji_test))
                  + list(emoji_sets.read_openmoji(pkgs.npm_dir, pkgs.emoji_test))
                  + list(emoji_sets.read_twemoji(pkgs.npm_dir, pkgs.emoji_test))
                  + list(emoji_sets.read_fluent(pkgs.npm_dir, pkgs.emoji_test))
                  + list(flags.read_flags(pkgs.npm_dir, pkgs.emoji_test)))
    ups = [it for it in everything if it.extra.get("emoji_id") == "1f44d"]
    assert {it.extra["style"] for it in ups} == {"google", "openmoji", "openmoji-black", "twemoji", "fluent-color",
                                                 "fluent-flat"}
    assert {(it.caption, it.concept) for it in ups} == {("thumbs up", "thumbs up")}
    japan = [it for it in everything if it.extra.get("emoji_id") == "1f1ef-1f1f5"]
    assert {it.extra["style"] for it in japan} == {"twemoji", "flag-icons"}
    noto = lambda caption: item_family({"source": "fonts-noto-color-emoji", "caption": caption})  # noqa: E731
    assert {item_family(it.metadata()) for it in japan} == {noto("flag: Japan")} == {"flag: japan"}
    split = ConceptSplit(test={noto("thumbs up: dark skin tone"), noto("flag: Japan")})  # as the benchmark holds out
    kept = [it for it in everything if not split.held_out(it.metadata())]
    assert kept and not any(it.extra.get("emoji_id", "").startswith(("1f44d", "1f1ef")) for it in kept)
    assert any(it.extra.get("emoji_id") == "2764" for it in kept)


@pytest.mark.parametrize("reader", ["google", "openmoji", "twemoji", "fluent", "flags"])
def test_npm_readers_report_a_missing_package(tmp_path, reader):
    test = tmp_path / "t.txt"
    test.write_text(EMOJI_TEST)
    fns = {"google": lambda d: emoji_sets.read_datasource("google", d, test),
           "openmoji": lambda d: emoji_sets.read_openmoji(d, test), "twemoji": lambda d: emoji_sets.read_twemoji(d, test),
           "fluent": lambda d: emoji_sets.read_fluent(d, test), "flags": lambda d: flags.read_flags(d, test)}
    for d in (tmp_path / "absent", tmp_path):  # no node_modules; a node_modules without the package
        with pytest.raises(SourceMissing, match="npm"):
            list(fns[reader](d))


@pytest.mark.parametrize("bad", ["{not json", "", "\x00\x01"])
def test_datasource_unreadable_metadata_is_a_missing_source(pkgs, bad):
    (Path(pkgs.npm_dir) / "emoji-datasource-google/emoji.json").write_text(bad)
    with pytest.raises(SourceMissing, match="emoji.json"):
        list(emoji_sets.read_datasource("google", pkgs.npm_dir, pkgs.emoji_test))


@pytest.mark.parametrize("rows", [[1, "x", None], [{"unified": "ZZZZ", "image": "x.png", "has_img_google": True}],
                                  [{"unified": "1F44D", "image": "../../../secret.png", "has_img_google": True}],
                                  [{"unified": "1F44D", "has_img_google": True}]])
def test_datasource_odd_rows_are_skipped(pkgs, rows):
    (Path(pkgs.npm_dir) / "emoji-datasource-google/emoji.json").write_text(json.dumps(rows))
    assert list(emoji_sets.read_datasource("google", pkgs.npm_dir, pkgs.emoji_test)) == []


def test_noto_items_carry_style_and_emoji_id(pkgs, tmp_path):
    from zscir.data.real.emoji import emoji_id, parse_emoji_id

    assert emoji_id([0x1F44C, 0xFE0F, 0x1F3FB]) == "1f44c-1f3fb"
    assert parse_emoji_id("2764-FE0F") == parse_emoji_id("2764") == "2764"
    with pytest.raises(ValueError):
        parse_emoji_id("zz")
    from zscir.data.real import emoji

    font = RealSources().emoji_font
    if not Path(font).is_file():
        pytest.skip("fonts-noto-color-emoji not installed")
    items = {it.key: it for it in emoji.read_emoji(Path(font), Path(pkgs.emoji_test))}
    heart = items["emoji-2764-fe0f"]
    assert heart.extra["style"] == "noto" and heart.extra["emoji_id"] == "2764"


# --- flags ----------------------------------------------------------------------------------------------


def test_flags_reader(pkgs):
    items = _by(flags.read_flags(pkgs.npm_dir, pkgs.emoji_test, aspects=("4x3",)))
    assert set(items) == {"flag-4x3-jp", "flag-4x3-gb-eng", "flag-4x3-asean"}
    jp = items["flag-4x3-jp"]
    assert jp.caption == "flag: Japan" and jp.concept == "flag" and jp.variant == {"name": "Japan", "aspect": "4x3"}
    assert jp.extra["emoji_id"] == "1f1ef-1f1f5" and jp.extra["style"] == "flag-icons" and jp.licence == "MIT"
    assert jp.extra["keywords"] == ["Tokyo", "Asia", "Japan"]
    assert items["flag-4x3-gb-eng"].caption == "flag: England"
    assert items["flag-4x3-gb-eng"].extra["emoji_id"] == "1f3f4-e0067-e0062-e0065-e006e-e0067-e007f"
    assert items["flag-4x3-asean"].caption == "flag: ASEAN" and "emoji_id" not in items["flag-4x3-asean"].extra
    im = jp.load()
    assert im.size == (256, 192)
    r, g, b, a = im.getpixel((128, 96))
    assert r > 150 and g < 60 and b < 80  # the red disc is in the middle


@pytest.mark.parametrize("code, want", [("jp", "1f1ef-1f1f5"), ("US", "1f1fa-1f1f8"),
                                        ("gb-sct", "1f3f4-e0067-e0062-e0073-e0063-e0074-e007f"),
                                        ("asean", None), ("un", "1f1fa-1f1f3"), ("", None), ("j1", None),
                                        ("../x", None)])
def test_flag_sequence(code, want):
    assert flags.flag_sequence(code) == want


# --- icon themes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, context, caption", [
    ("folder-music", "places", "a music folder icon"),
    ("application-pdf", "mimetypes", "a pdf file icon"),
    ("text-x-python", "mimetypes", "a python text file icon"),
    ("image-png", "mimes", "a png image file icon"),
    ("inode-directory", "mimetypes", "a directory icon"),
    ("org.gnome.Calculator", "apps", "the calculator app icon"),
    ("firefox", "apps", "the firefox app icon"),
    ("edit-copy", "actions", "an edit copy icon"),
    ("user-home", "places", "a home user icon"),
    ("audio_volume_high", "status", "an audio volume high icon"),
    ("", "apps", ""),
])
def test_icon_caption_rule(name, context, caption):
    assert icons.icon_caption(name, context) == caption


def test_icon_reader_picks_one_file_per_drawing(pkgs):
    items = _by(icons.read_icons("papirus", pkgs.icons_dir))
    assert set(items) == {"icon-papirus-places-folder-music", "icon-papirus-apps-org_gnome_calculator",
                          "icon-papirus-mimetypes-application-pdf", "icon-papirus-mimetypes-text-x-python",
                          "icon-papirus-actions-edit-copy"}  # no symbolic, no @2x, no alias, no leaking link
    music = items["icon-papirus-places-folder-music"]
    assert music.caption == "a music folder icon" and music.concept == "music folder"
    assert music.extra["file"] == "64x64/places/folder-music.svg"  # the largest size
    assert music.extra["keywords"] == ["folder-audio", "folder-music"] and music.extra["style"] == "papirus"
    assert music.licence == "GPL-3.0-only" and music.source == "papirus-icon-theme"
    r, g, b, _ = music.load().getpixel((128, 128))
    assert (r, g, b) == (0x22, 0x66, 0xCC)


def test_icon_reader_missing_theme(tmp_path):
    with pytest.raises(SourceMissing, match="papirus-icon-theme"):
        list(icons.read_icons("papirus", tmp_path))


# --- the SVG rasteriser on hostile files ----------------------------------------------------------------

NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'


def _hostile(tmp_path: Path) -> dict[str, str]:
    secret = _png(tmp_path / "secret.png", (0, 255, 0), (32, 32))
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            + "".join(f'<!ENTITY lol{i} "{("&lol%d;" % (i - 1) if i else "&lol;") * 10}">' for i in range(1, 10))
            + f']><svg {NS}><text>&lol9;</text></svg>')
    return {
        "http-image": f'<svg {NS} width="32" height="32"><image href="http://127.0.0.1:9/x.png" width="32" height="32"/></svg>',
        "https-xlink": f'<svg {NS} width="32" height="32"><image xlink:href="https://example.invalid/x.png" width="32" height="32"/></svg>',
        "file-url": f'<svg {NS} width="32" height="32"><image xlink:href="file://{secret}" width="32" height="32"/></svg>',
        "absolute-path": f'<svg {NS} width="32" height="32"><image href="{secret}" width="32" height="32"/></svg>',
        "relative-path": f'<svg {NS} width="32" height="32"><image href="secret.png" width="32" height="32"/></svg>',
        "use-external": f'<svg {NS} width="32" height="32"><use href="http://127.0.0.1:9/a.svg#x"/></svg>',
        "use-file": f'<svg {NS} width="32" height="32"><use xlink:href="file://{tmp_path}/other.svg#x"/></svg>',
        "css-import": f'<svg {NS} width="32" height="32"><style>@import url("http://127.0.0.1:9/a.css");</style>'
                      '<rect width="32" height="32"/></svg>',
        "billion-laughs": bomb,
        "external-entity": f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                           f'<svg {NS}><text>&x;</text></svg>',
        "parameter-entity": '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd">%p;]>'
                            f'<svg {NS}/>',
        "empty": "",
        "truncated": f'<svg {NS} width="32" height="32"><rect width="3',
        "not-xml": "GIF89a not an svg at all",
        "html": "<html><body>hello</body></html>",
        "unclosed": f"<svg {NS}><g><g></svg>",
        "zero-size": f'<svg {NS} width="0" height="0"/>',
        "negative-size": f'<svg {NS} width="-5" height="-5"><rect width="5" height="5"/></svg>',
        "extreme-aspect": f'<svg {NS} viewBox="0 0 100000 1"><rect width="100000" height="1"/></svg>',
        "deep-nesting": f"<svg {NS}>" + "<g>" * 5000 + "</g>" * 5000 + "</svg>",
    }


HOSTILE = list(_hostile(Path("/nonexistent")))


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_svg_is_refused_or_bounded_and_never_fetches(tmp_path, monkeypatch, case):
    calls = []

    def no_network(*a, **k):
        calls.append(a)
        raise AssertionError("an SVG made zscir open a URL")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    import cairosvg.url

    monkeypatch.setattr(cairosvg.url, "urlopen", no_network, raising=False)
    data = _hostile(tmp_path)[case].encode()
    try:
        im = rasterise_svg(data, SvgLimits(size=64, timeout_s=5))
    except SvgRejected as e:
        assert str(e)  # a reason
    else:
        assert max(im.size) <= 64 and im.mode == "RGBA"
        a = np.asarray(im)
        assert not ((a[..., 1] > 200) & (a[..., 0] < 50) & (a[..., 3] > 0)).any()  # the green secret never shows
    assert calls == []


def test_huge_declared_size_renders_at_our_size():
    svg = f'<svg {NS} width="100000000" height="100000000"><rect width="100000000" height="100000000" fill="red"/></svg>'
    im = rasterise_svg(svg.encode(), SvgLimits(size=32))
    assert im.size == (32, 32) and im.getpixel((16, 16)) == (255, 0, 0, 255)


def test_wide_svg_keeps_its_aspect():
    im = rasterise_svg(f'<svg {NS} viewBox="0 0 40 10"><rect width="40" height="10"/></svg>'.encode(),
                       SvgLimits(size=80))
    assert im.size == (80, 20)


def test_slow_svg_times_out():
    many = "".join(f'<circle cx="{i % 97}" cy="{i % 89}" r="{1 + i % 40}" fill="#{i % 255:02x}0000" '
                   f'stroke="blue" stroke-width="3"/>' for i in range(40000))
    t = __import__("time").monotonic()
    with pytest.raises(SvgRejected, match="longer than"):
        rasterise_svg(f'<svg {NS} viewBox="0 0 100 100">{many}</svg>'.encode(), SvgLimits(size=256, timeout_s=0.2))
    assert __import__("time").monotonic() - t < 30


@pytest.mark.parametrize("kind", ["too-big", "directory", "fifo", "missing"])
def test_svg_file_checks(tmp_path, kind):
    p = tmp_path / "x.svg"
    if kind == "too-big":
        p.write_text(SVG_RED.format(c="ff0000") + " " * 2000)
    elif kind == "directory":
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)
    with pytest.raises(SvgRejected):
        rasterise_svg(p, SvgLimits(max_bytes=1000))


# --- the corpus builder ---------------------------------------------------------------------------------

NEW_SOURCES = ("emoji-google", "openmoji", "twemoji", "fluent-emoji", "flags", "icons-papirus")


def test_corpus_builder_with_the_new_sources(pkgs, tmp_path):
    from zscir.data.real.corpus import CorpusConfig, build_corpus

    # a byte-identical twin: the same drawing in two files is one distinct picture
    twin = Path(pkgs.npm_dir) / "@twemoji/svg/1f44d.svg"
    twin.write_text((Path(pkgs.npm_dir) / "openmoji/black/svg/1F44D.svg").read_text())
    # a broken file is skipped with its reason
    (Path(pkgs.npm_dir) / "fluentui-emoji/icons/flat/abacus.svg").write_text("<svg")
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"c{workers}"
        r = build_corpus(CorpusConfig(out=str(out), sources=NEW_SOURCES, max_per_source=0, image_size=32,
                                      packages=pkgs, workers=workers), progress=False)
        runs[workers] = (r, {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")})
    r, shards = runs[2]
    assert shards == runs[1][1]  # the same bytes whatever the number of workers
    assert r["counts"]["emoji-google"] == {"available": 3, "selected": 3}
    assert r["counts"]["icons-papirus"]["selected"] == 5
    assert [s["key"] for s in r["skipped"]] == ["fluent-flat-1f9ee"]
    assert r["duplicates"] >= 1 and {"key": "twemoji-1f44d", "source": "@twemoji/svg",
                                      "same_as": "openmoji-black-1f44d"} in r["duplicate_items"]
    total = sum(v["selected"] for v in r["counts"].values())
    assert r["written"] == total - len(r["skipped"]) - r["duplicates"]
    lic = sorted(p.name for p in (tmp_path / "c2/licenses").iterdir())
    assert "openmoji-LICENSE.copyright" in lic and "twemoji-svg-license.copyright" in lic
    with tarfile.open(tmp_path / "c2/shards/corpus-00000.tar") as tf:
        metas = [json.loads(tf.extractfile(m).read()) for m in tf.getmembers() if m.name.endswith(".json")]
    styles = {m.get("style") for m in metas}
    assert {"google", "openmoji", "openmoji-black", "fluent-color", "flag-icons", "papirus"} <= styles
    assert all("emoji_id" in m for m in metas if m["source"] != "papirus-icon-theme" and m.get("code") != "asean")


def test_corpus_builder_excludes_held_out_families_in_every_style(pkgs, tmp_path):
    from zscir.data.real.corpus import CorpusConfig, build_corpus
    from zscir.data.real.split import ConceptSplit, item_family, write_split

    fam = item_family({"source": "fonts-noto-color-emoji", "caption": "thumbs up"})
    split = write_split(ConceptSplit(test={fam}), tmp_path / "split.json")
    r = build_corpus(CorpusConfig(out=str(tmp_path / "c"), sources=NEW_SOURCES, max_per_source=0, image_size=32,
                                  packages=pkgs, exclude_split=str(split)), progress=False)
    with tarfile.open(tmp_path / "c/shards/corpus-00000.tar") as tf:
        metas = [json.loads(tf.extractfile(m).read()) for m in tf.getmembers() if m.name.endswith(".json")]
    assert metas and not [m for m in metas if m.get("concept") == "thumbs up"]
    assert r["counts"]["openmoji"]["held_out"] == 4 and r["counts"]["emoji-google"]["held_out"] == 2


# --- the installed packages (skip when absent) ---------------------------------------------------------


def _installed(fn):
    try:
        return list(fn())
    except SourceMissing as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("source", ["google", "twitter", "openmoji", "twemoji", "fluent", "flags"])
def test_installed_npm_sets(source):
    s = RealSources()
    fn = {"google": lambda: emoji_sets.read_datasource("google", s.npm_dir, s.emoji_test),
          "twitter": lambda: emoji_sets.read_datasource("twitter", s.npm_dir, s.emoji_test),
          "openmoji": lambda: emoji_sets.read_openmoji(s.npm_dir, s.emoji_test),
          "twemoji": lambda: emoji_sets.read_twemoji(s.npm_dir, s.emoji_test),
          "fluent": lambda: emoji_sets.read_fluent(s.npm_dir, s.emoji_test),
          "flags": lambda: flags.read_flags(s.npm_dir, s.emoji_test)}[source]
    items = _installed(fn)
    assert len(items) > (400 if source == "flags" else 3000)
    by_id = {it.extra.get("emoji_id"): it for it in items}
    probe = by_id.get("1f1ef-1f1f5") if source == "flags" else by_id.get("1f44d-1f3ff")
    if source != "flags":
        assert probe.caption == "thumbs up: dark skin tone" and probe.variant["skin_tone"] == "dark"
    else:
        assert probe.caption == "flag: Japan"
    from zscir.data.real.corpus import fit_square

    im = probe.load()
    a = np.asarray(fit_square(im, 64)).astype(int)  # on white (OpenMoji's black style is black on transparent)
    assert max(im.size) >= 64 and a.std() > 10


@pytest.mark.parametrize("theme", ["papirus", "adwaita"])
def test_installed_icon_themes(theme):
    items = _installed(lambda: icons.read_icons(theme))
    assert len(items) > 200
    assert all(it.caption.endswith(" icon") and "symbolic" not in it.extra["icon_name"] for it in items)
    for it in items[:: max(1, len(items) // 3)][:3]:
        im = it.load()
        assert 16 <= max(im.size) <= 256
    if theme == "papirus":
        music = [it for it in items if "folder-music" in it.extra["keywords"]]  # an alias of folder-blue-music
        assert len(music) == 1 and music[0].caption.endswith("music folder icon")


def test_script_sources_all_reads_every_source_and_skips_missing_ones(pkgs, tmp_path, capsys):
    import importlib.util

    from zscir.data.real.corpus import READERS

    spec = importlib.util.spec_from_file_location("brc", Path(__file__).resolve().parents[1] / "scripts/build_real_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    none = str(tmp_path / "none")
    rc = mod.main(["--out", str(tmp_path / "out"), "--sources", "all", "--max-per-source", "2", "--image-size", "16",
                   "--emoji-font", none, "--tuxpaint-dir", none, "--openclipart-dir", none, "--npm-dir", pkgs.npm_dir,
                   "--icons-dir", pkgs.icons_dir, "--emoji-test", pkgs.emoji_test, "--workers", "2", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    info = json.loads((tmp_path / "out/corpus.json").read_text())
    assert set(info["counts"]) == set(READERS)
    assert "missing" in info["counts"]["tuxpaint"] and "missing" in info["counts"]["icons-breeze"]
    assert info["counts"]["flags"]["selected"] == 2 and info["counts"]["icons-papirus"]["selected"] == 2
    assert "pixel-identical duplicates" in capsys.readouterr().out
