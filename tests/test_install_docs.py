"""Every install line zscir shows keeps the pinned torch.

``pip install 'zscir[openclip]'`` without the constraint file replaced the CPU torch 2.13 with torch 2.14.1 and
~18 CUDA packages (torchvision pins the newest torch). So every ``pip install`` of zscir (``zscir``,
``zscir[...]``, ``.``, ``.[...]``, ``-e .``) in README.md, docs/*.md and zscir's own messages must carry
``-c constraints.txt``, and every ``pip install torch`` must name ``torch==2.13.0``. The checker is tested on
the bad lines it exists to catch.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PINNED = "torch==2.13.0"
#: packages that depend on torch: installing them without the constraint (or --no-deps) may replace it
TORCH_DEPENDENTS = ("open_clip_torch", "open-clip-torch", "torchvision", "diffusers", "transformers", "peft")
_VALUE_OPTIONS = {"-c", "--constraint", "-r", "--requirement", "-i", "--index-url", "--extra-index-url", "-f",
                  "--find-links", "-t", "--target", "--prefix", "--root", "--python", "--platform"}


def pip_problem(command: str) -> str | None:
    """Why ``command`` (one shell command) may replace the pinned torch, or None when it cannot."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    for i, w in enumerate(words):
        if re.fullmatch(r"(\S*/)?pip3?(\.\d+)?", w) and i + 1 < len(words) and words[i + 1] == "install":
            args = words[i + 2:]
            break
    else:
        return None
    targets, constrained, no_deps, j = [], False, False, 0
    while j < len(args):
        a = args[j]
        if a in ("-c", "--constraint") and j + 1 < len(args):
            constrained |= Path(args[j + 1]).name == "constraints.txt"
            j += 2
            continue
        if a.startswith("--constraint=") or (a.startswith("-c") and len(a) > 2):
            constrained |= Path(a.split("=", 1)[-1].removeprefix("-c")).name == "constraints.txt"
        elif a in ("-e", "--editable") and j + 1 < len(args):
            targets.append(args[j + 1])
            j += 2
            continue
        elif a in _VALUE_OPTIONS:
            j += 2
            continue
        elif a == "--no-deps":
            no_deps = True
        elif not a.startswith("-"):
            targets.append(a)
        j += 1
    for t in targets:
        name = re.split(r"[\[=<>!~; ]", t, maxsplit=1)[0].lower()
        if name in ("zscir", ".", "./") and not constrained:
            return f"installs zscir ({t}) without -c constraints.txt"
        if name == "torch" and t.replace(" ", "") != PINNED:
            return f"installs {t}, not the pinned {PINNED}"
        if name in TORCH_DEPENDENTS and not (constrained or no_deps):
            return f"installs {t}, which depends on torch, without -c constraints.txt or --no-deps"
    return None


def _shell_commands(block: str) -> list[str]:
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out += [p.strip() for p in re.split(r"&&|\|\||;|\|", line) if p.strip()]
    return out


def documented_installs() -> list[tuple[str, str]]:
    """(where, command) for every pip install in a bash block or an inline code span of the docs."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for block in re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", text, flags=re.S):
            found += [(path.name, c) for c in _shell_commands(block) if "pip" in c and " install" in c]
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        for span in re.findall(r"`([^`\n]*pip3? install[^`\n]*)`", prose):
            found += [(path.name, c) for c in _shell_commands(span)]
    return found


def message_installs() -> list[tuple[str, str]]:
    """(file, command) for every ``pip install ...`` that zscir's own source tells a user."""
    found = []
    for path in sorted((REPO / "src" / "zscir").rglob("*.py")):
        for m in re.finditer(r"pip3? install[^`'\"()\n]*(?:'[^'\n]*'|\"[^\"\n]*\")?[^`'\"()\n]*",
                             path.read_text(encoding="utf-8")):
            found.append((str(path.relative_to(REPO)), m.group(0)))
    return found


# --------------------------------------------------------------------------------------- the checker itself
@pytest.mark.parametrize("bad", [
    "pip install 'zscir[openclip]'", 'pip install -e ".[real]"', "pip install -e .", "pip install .",
    "pip install zscir", "pip install .[dev]", "python -m pip install -e '.[faiss]'", "pip3 install zscir[serve]",
    "pip install --upgrade zscir", "pip install -c other.txt -e .", "pip install -e . -r constraints.txt",
    "pip install torch", "pip install torch==2.14.1", "pip install 'torch>=2.1'", "pip install torch==2.13",
    "pip install open_clip_torch", "pip install torchvision", "pip install -U transformers diffusers",
    "sudo pip install -e ./", "/usr/bin/pip install -e .",
])
def test_checker_catches_lines_that_replace_torch(bad):
    assert pip_problem(bad) is not None, bad


@pytest.mark.parametrize("good", [
    "pip install -c constraints.txt -e .", 'pip install -c constraints.txt -e ".[dev]"',
    "pip install -e . -c constraints.txt", "pip install --constraint=constraints.txt -e '.[real]'",
    "pip install -c ../zscir/constraints.txt zscir", "pip install torch==2.13.0 --index-url https://x/cpu",
    "pip install --no-deps open_clip_torch", "pip install ftfy", "pip install faiss-cpu", "zscir demo",
    "python -m pytest", "pip download torch",
])
def test_checker_accepts_lines_that_keep_torch(good):
    assert pip_problem(good) is None, good


def test_the_constraint_pins_the_torch_the_docs_name():
    lines = [ln.strip() for ln in (REPO / "constraints.txt").read_text().splitlines() if ln.strip()]
    assert PINNED in lines


# --------------------------------------------------------------------------------------- the docs and messages
def test_the_docs_show_install_lines_and_the_extraction_finds_them():
    found = documented_installs()
    assert len(found) >= 6, found
    assert any("openclip" in c for _, c in found) and any("[real]" in c for _, c in found)


def test_every_documented_install_keeps_the_pinned_torch():
    bad = [f"{where}: {cmd}  <- {pip_problem(cmd)}" for where, cmd in documented_installs() if pip_problem(cmd)]
    assert not bad, "install lines that can replace the pinned torch:\n" + "\n".join(bad)


def test_every_install_line_in_zscirs_messages_keeps_the_pinned_torch():
    found = message_installs()
    assert len(found) >= 3, found
    bad = [f"{where}: {cmd}  <- {pip_problem(cmd)}" for where, cmd in found if pip_problem(cmd)]
    assert not bad, "messages that tell users to install without the constraint:\n" + "\n".join(bad)


@pytest.mark.parametrize("extra", ["faiss", "openclip", "peers", "data", "serve", "real", "dev"])
def test_install_hint_of_every_extra_keeps_the_pinned_torch(extra):
    from zscir.extras import install_hint

    hint = install_hint(extra)
    assert f".[{extra}]" in hint and pip_problem(hint) is None


def test_install_hint_knows_the_extras_of_pyproject():
    import tomllib

    from zscir.extras import EXTRAS, install_hint

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) == set(extras)
    with pytest.raises(ValueError, match="unknown extra"):
        install_hint("gpu")


def test_readme_keeps_its_first_two_lines():
    block = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.S)[0]
    assert block.splitlines()[:2] == ['pip install -c constraints.txt -e . && zscir demo',
                                      'pip install -c constraints.txt -e ".[dev]" && python -m pytest']
