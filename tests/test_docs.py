"""The documentation cannot drift from the code.

* Every ```bash block of the tutorials (docs/tutorials/*.md, docs/quickstart.md) is run, page by
  page and in order, with ``bash -euo pipefail`` in a fresh folder, with the venv's ``bin`` on PATH
  and ``NAPARI_GDT_DATA`` set. Every ``--out``/``--screenshot``/``> FILE`` it names must exist
  afterwards. A block that needs a piece not in this build (a subcommand, a bundled model, a
  module) is skipped with that reason, together with the rest of its page; nothing is faked.
* ```shell blocks are templates with the user's own paths: each ``napari-gdt`` line in them must
  parse with the real parser (options that do not exist fail the test).
* Every public function and class of the core modules has a docstring, every public module is in
  the API reference, and every CLI subcommand and option has help text and appears in the
  generated CLI reference.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIAL_PAGES = sorted((DOCS / "tutorials").glob("*.md")) + [DOCS / "quickstart.md"]
CORE_PACKAGES = ["models", "expression", "editing", "rendering", "analysis", "export", "training"]
CORE_MODULES = ["napari_gdt.data", "napari_gdt.errors", "napari_gdt.pixels", "napari_gdt.session", "napari_gdt.synthetic"]
BLOCK_TIMEOUT_S = 300

FENCE = re.compile(r"^```([A-Za-z0-9_-]*)[^\n]*\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)


# --------------------------------------------------------------------------- block parsing
def code_blocks(path: Path, lang: str) -> list[tuple[int, str]]:
    """(line number, code) of the fenced blocks of language ``lang`` in a Markdown page."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        if m.group(1) == lang:
            out.append((text[: m.start()].count("\n") + 1, m.group(2)))
    return out


def _logical_lines(code: str) -> list[str]:
    """Join backslash continuations, drop comments and heredoc bodies."""
    lines, cur, heredoc = [], "", None
    for raw in code.splitlines():
        if heredoc is not None:
            if raw.strip() == heredoc:
                heredoc = None
            continue
        line = raw.rstrip()
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        m = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", cur)
        if m:
            heredoc = m.group(1)
        if cur.strip() and not cur.strip().startswith("#"):
            lines.append(cur)
        cur = ""
    return lines


def gdt_commands(code: str) -> list[list[str]]:
    """The ``napari-gdt ...`` invocations of a block, as argument lists (without the program name)."""
    env = {"NAPARI_GDT_DATA": "/data", "HOME": "/home/user"}
    cmds = []
    for line in _logical_lines(code):
        line = re.sub(r"\s#.*$", "", line)
        for seg in re.split(r"&&|\|\||;|\|", line):
            seg = re.split(r"\s[12]?>>?\s?", seg)[0]
            seg = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), "X"), seg)
            try:
                words = shlex.split(seg)
            except ValueError:
                continue
            while words and re.fullmatch(r"\w+=\S*", words[0]):
                words = words[1:]  # VAR=value prefixes
            if words and words[0] == "napari-gdt":
                cmds.append(words[1:])
    return cmds


def expected_outputs(code: str) -> list[str]:
    """Files a block promises to write: ``--out X``, ``--screenshot X``, ``> X``."""
    outs = []
    for line in _logical_lines(code):
        outs += re.findall(r"--(?:out|screenshot)[ =]([^\s;|&]+)", line)
        outs += re.findall(r"(?<![0-9&])>\s*([A-Za-z0-9_.\-/]+)", line)
    return [o for o in outs if not o.startswith(("/dev/", "$"))]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from napari_gdt.cli import build_parser

    for a in build_parser()._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def missing_pieces(code: str) -> list[str]:
    """What this build lacks for a block: subcommands, bundled demo models, modules, data."""
    from napari_gdt.models.bundle import BUNDLED_MODELS, WEIGHTS_DIR

    subs = _subcommands()
    missing = []
    for words in gdt_commands(code):
        if words and not words[0].startswith("-") and words[0] not in subs:
            missing.append(f"subcommand 'napari-gdt {words[0]}'")
    demo_models = {"her2st": "her2st-he", "merfish": "merfish-dapi"}
    for words in gdt_commands(code):
        if words[:1] == ["demo"] and "demo" in subs:  # the demo datasets use the bundled models
            ds = subs["demo"].parse_known_args(words[1:])[0].dataset
            name = demo_models.get(ds)
            if name and not (WEIGHTS_DIR / BUNDLED_MODELS[name]).exists():
                missing.append(f"bundled model {name} for `napari-gdt demo --dataset {ds}`")
    for name, fname in BUNDLED_MODELS.items():
        if re.search(rf"(?<![\w/.-]){re.escape(name)}(?![\w.-])", code) and not (WEIGHTS_DIR / fname).exists():
            missing.append(f"bundled model {name} ({fname} not in models/weights)")
    for mod in sorted(set(re.findall(r"\bnapari_gdt(?:\.\w+)+", code))):
        parts = mod.split(".")
        found = False
        for n in range(len(parts), 1, -1):  # the longest importable prefix must be a module or attribute
            try:
                spec = importlib.util.find_spec(".".join(parts[:n]))
            except (ImportError, ValueError):
                spec = None
            if spec is not None:
                found = True
                break
        if not found or (importlib.util.find_spec(".".join(parts[:2])) is None):
            missing.append(f"module {'.'.join(parts[:2])}")
    if re.search(r"--format[ =](st|visium|anndata)\b", code) and importlib.util.find_spec("napari_gdt.expression.spots") is None:
        missing.append("module napari_gdt.expression.spots (spot formats)")
    if re.search(r"\bspatialdata\b|--into-spatialdata", code) and importlib.util.find_spec("spatialdata") is None:
        missing.append("package spatialdata (pip install 'napari-gdt[spatialdata]')")
    if "NAPARI_GDT_DATA" in code and _data_dir() is None:
        missing.append("the sample data folder (set NAPARI_GDT_DATA)")
    return sorted(set(missing))


def _data_dir() -> Path | None:
    env = os.environ.get("NAPARI_GDT_DATA")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data", Path("/work/shared/data")]:
        if cand.is_dir():
            return cand.resolve()
    return None


# --------------------------------------------------------------------------- helpers' own tests
def test_block_parsing_helpers(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "text\n\n```bash\nnapari-gdt render --model m.safetensors \\\n    --expression c.ome.zarr --out a.png\n"
        "cat > r.json <<'EOF'\n{\"napari-gdt\": 1}\nEOF\nnapari-gdt evaluate --json > e.json  # comment\n```\n\n"
        "```python\nprint(1)\n```\n"
    )
    [(line, code)] = code_blocks(page, "bash")
    assert line == 3
    assert gdt_commands(code) == [
        ["render", "--model", "m.safetensors", "--expression", "c.ome.zarr", "--out", "a.png"],
        ["evaluate", "--json"],
    ]
    assert expected_outputs(code) == ["a.png", "r.json", "e.json"]
    assert code_blocks(page, "python") == [(12, "print(1)\n")]
    assert "subcommand 'napari-gdt no-such-command'" in missing_pieces("napari-gdt no-such-command --x 1\n")
    assert any("module napari_gdt.nonexistent" in m for m in missing_pieces("python -c 'import napari_gdt.nonexistent.x'"))
    assert missing_pieces("napari-gdt info m.safetensors\npython -c 'import napari_gdt.errors'\n") == []


def test_every_tutorial_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "site" not in p.parts]
    missing = [p for p in pages if p not in nav]
    assert not missing, f"pages not in the mkdocs.yml nav: {missing}"
    assert len(list((DOCS / "tutorials").glob("*.md"))) >= 6


# --------------------------------------------------------------------------- tutorials
def _run_env(tmp: Path) -> dict:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["MPLBACKEND"] = "Agg"
    env["HOME"] = env.get("HOME", str(tmp))
    d = _data_dir()
    if d is not None:
        env["NAPARI_GDT_DATA"] = str(d)
    env.setdefault("NAPARI_GDT_DEVICE", "cpu")
    return env


@pytest.mark.slow
@pytest.mark.parametrize("page", TUTORIAL_PAGES, ids=lambda p: p.stem)
def test_tutorial_commands_run(page, tmp_path):
    blocks = code_blocks(page, "bash")
    assert blocks, f"{page.name}: no runnable ```bash block"
    # `napari-gdt` must resolve to this checkout's entry point
    shim = tmp_path / ".bin"
    shim.mkdir()
    (shim / "napari-gdt").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m napari_gdt.cli "$@"\n')
    (shim / "napari-gdt").chmod(0o755)
    env = _run_env(tmp_path)
    env["PATH"] = f"{shim}{os.pathsep}{env['PATH']}"
    work = tmp_path / "work"
    work.mkdir()
    for line, code in blocks:
        for words in gdt_commands(code):
            assert not (words[:1] == ["demo"] and "--screenshot" not in words), (
                f"{page.name}:{line}: `napari-gdt demo` opens a window; in a bash block it needs --screenshot"
            )
        missing = missing_pieces(code)
        if missing:
            pytest.skip(f"{page.name}:{line} and later blocks need pieces not in this build: {', '.join(missing)}")
        script = tmp_path / f"block_{line}.sh"
        script.write_text(code)
        try:
            r = subprocess.run(
                ["bash", "-euo", "pipefail", str(script)],
                check=False,
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{page.name}:{line}: block ran longer than {BLOCK_TIMEOUT_S} s")
        assert r.returncode == 0, (
            f"{page.name}:{line}: exit {r.returncode}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
        )
        for out in expected_outputs(code):
            p = work / out
            assert p.exists(), f"{page.name}:{line}: expected output {out} was not written"
            if p.is_file():
                assert p.stat().st_size > 0, f"{page.name}:{line}: {out} is empty"


def _template_pages():
    return [p for p in sorted(DOCS.rglob("*.md")) if code_blocks(p, "shell")]


@pytest.mark.parametrize("page", _template_pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_template_commands_parse(page):
    """```shell blocks use the reader's own paths; their options must still exist."""
    from napari_gdt.cli import build_parser

    subs = _subcommands()
    n = 0
    for line, code in code_blocks(page, "shell"):
        for words in gdt_commands(code):
            if not words or words[0] not in subs:
                continue  # a subcommand not in this build is reported by the tutorial runner
            n += 1
            try:
                build_parser().parse_args(words)
            except SystemExit as e:
                pytest.fail(f"{page.name}:{line}: `napari-gdt {' '.join(words)}` does not parse (exit {e.code})")
    assert n or any(w for _, c in code_blocks(page, "shell") for w in gdt_commands(c))


# --------------------------------------------------------------------------- docstrings and API reference
def public_modules() -> list[str]:
    """Every public module of the core packages (no ``_private`` parts)."""
    import napari_gdt

    mods = list(CORE_MODULES)
    for pkg in CORE_PACKAGES:
        name = f"napari_gdt.{pkg}"
        if importlib.util.find_spec(name) is None:
            continue
        mod = importlib.import_module(name)
        for info in pkgutil.walk_packages(mod.__path__, prefix=name + "."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                mods.append(info.name)
    assert napari_gdt.__name__ == "napari_gdt"
    return sorted(m for m in mods if importlib.util.find_spec(m) is not None)


def public_objects(mod):
    """Public functions and classes defined in ``mod`` (its ``__all__`` if it has one)."""
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n in vars(mod) if not n.startswith("_")]
    for n in names:
        obj = getattr(mod, n, None)
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, "__module__", None) == mod.__name__:
            yield n, obj


def test_every_public_function_has_a_docstring():
    """Module docstrings and the docstrings of public module-level functions and classes."""
    undocumented = []
    for name in public_modules():
        mod = importlib.import_module(name)
        if not (mod.__doc__ or "").strip():
            undocumented.append(f"{name} (module)")
        for n, obj in public_objects(mod):
            if not (inspect.getdoc(obj) or "").strip():
                undocumented.append(f"{name}.{n}")
    assert not undocumented, "public objects without a docstring:\n  " + "\n  ".join(undocumented)


def _hooks():
    sys.path.insert(0, str(DOCS))
    try:
        import hooks  # docs/hooks.py, the MkDocs hook that writes the CLI and API references

        return hooks
    finally:
        sys.path.remove(str(DOCS))


def test_api_reference_covers_every_public_module():
    """The generated API page documents every public core module (and only existing ones)."""
    assert "<!-- api-reference -->" in (DOCS / "reference" / "api.md").read_text()
    md = _hooks()._api_markdown()
    listed = set(re.findall(r"^:::\s*([\w.]+)", md, re.MULTILINE))
    missing = [m for m in public_modules() if m not in listed]
    assert not missing, f"modules missing from the API reference: {missing}"
    assert listed <= set(public_modules()), sorted(listed - set(public_modules()))


def test_every_cli_command_and_option_is_documented():
    from napari_gdt.cli import COMMANDS, build_parser

    md = _hooks()._cli_markdown()
    p = build_parser()
    [sub_action] = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {ca.dest: ca.help for ca in sub_action._choices_actions}
    assert sub_action.choices, "no subcommands"
    problems = []
    for name, sp in sub_action.choices.items():
        if f"## napari-gdt {name}" not in md:
            problems.append(f"{name}: not in the generated CLI reference")
        if not (helps.get(name) or "").strip():
            problems.append(f"{name}: no help text")
        if not (sp.description or "").strip():
            problems.append(f"{name}: no description")
        for a in sp._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            if not (a.help or "").strip():
                problems.append(f"{name} {'/'.join(a.option_strings) or a.dest}: no help text")
            for opt in a.option_strings:
                if opt not in md:
                    problems.append(f"{name} {opt}: not in the CLI reference")
    assert not problems, "\n".join(problems)
    # the commands the contract names are all wired (a missing module is listed here)
    assert set(sub_action.choices) <= {c.replace("_", "-") for c in COMMANDS}


def test_shortcuts_page_lists_the_bound_keys():
    """The keys the widgets bind are the keys docs/shortcuts.md lists."""
    page = (DOCS / "shortcuts.md").read_text()
    from napari_gdt.widgets import editing

    keys = [editing.KEY_APPLY, editing.KEY_UNDO, editing.KEY_REDO]
    if importlib.util.find_spec("napari_gdt.widgets.compare") is not None:
        from napari_gdt.widgets import compare

        keys.append(compare.SHORTCUT)
    missing = [k for k in keys if f"`{k}`" not in page]
    assert not missing, f"keys bound by the widgets but not in docs/shortcuts.md: {missing}"


def test_her2st_tutorial_genes_match_the_bundled_panel():
    """The her2st tutorial says which markers the bundled model reads; keep that true."""
    from napari_gdt.models.bundle import BUNDLED_MODELS, WEIGHTS_DIR, read_card

    if not (WEIGHTS_DIR / BUNDLED_MODELS["her2st-he"]).exists():
        pytest.skip("bundled model her2st-he not in this build")
    panel = set(read_card("her2st-he")["genes"])
    text = (DOCS / "tutorials" / "her2st-what-if.md").read_text()
    assert "All of them are read" in text
    listed = {"ERBB2", "GRB7", "KRT19", "KRT8", "EPCAM", "CD24", "CDH1", "MUCL1"}
    assert listed <= panel, sorted(listed - panel)
    assert '"genes": ["ERBB2", "GRB7", "KRT19", "EPCAM"]' in text
