"""The project's contract: pins agree, notebooks are clean, commands are wired."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        m = re.match(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-\[\]]+)==([^\s#]+)", line)
        if m:
            pins[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return pins


def test_environment_yml_carries_the_lock_pins():
    lock = _pins((ROOT / "requirements.lock").read_text().splitlines())
    env = _pins((ROOT / "environment.yml").read_text().splitlines())
    assert lock, "requirements.lock has no pins"
    assert env == lock, {k: (env.get(k), lock.get(k)) for k in set(env) | set(lock)
                         if env.get(k) != lock.get(k)}
    assert re.search(r"^\s*-\s*python=3\.11\s*$", (ROOT / "environment.yml").read_text(), re.M)


def test_top_level_requirements_are_pinned_identically_everywhere():
    top = _pins((ROOT / "requirements.in").read_text().splitlines())
    lock = _pins((ROOT / "requirements.lock").read_text().splitlines())
    project = _pins(re.findall(r'"([^"]+==[^"]+)"', (ROOT / "pyproject.toml").read_text()))
    assert {k: lock.get(k) for k in top} == top
    assert {k: top.get(k) for k in project} == project
    # The known-good pins of this project.
    for name, version in {"torch": "2.14.1", "torchvision": "0.29.1", "fastai": "2.8.12",
                          "nmslib": "2.1.2", "fasttext-numpy2": "0.10.4", "papermill": "2.7.0",
                          "nbval": "0.11.0"}.items():
        assert lock[name] == version, name


def test_notebooks_are_committed_without_outputs():
    nbs = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(nbs) >= 8
    for nb in nbs:
        cells = json.loads(nb.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert all(not c["outputs"] and c["execution_count"] is None for c in code), nb.name
        tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{nb.name}: needs exactly one cell tagged 'parameters'"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    commands = [ln.split("#")[0].strip() for ln in blocks[0].splitlines() if ln.strip()]
    assert commands[:2] == ["make reports", "make test"]
    ci = (ROOT / ".ci/run").read_text()
    assert re.search(r"^make test$", ci, re.M)


README_MAX_BYTES = 12_000
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(md: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#+\s+(.+?)\s*$", re.sub(r"```.*?```", "", md, flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def test_readme_is_short_and_links_every_docs_page():
    readme = ROOT / "README.md"
    size = readme.stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move details into docs/"
    links = {t.split("#")[0] for t in LINK.findall(readme.read_text())}
    linked = {t for t in links if t.startswith("docs/") and t.endswith(".md")}
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")}
    assert pages, "docs/ has no pages"
    assert not linked - pages, f"README links missing pages: {sorted(linked - pages)}"
    assert not pages - linked, f"README does not link: {sorted(pages - linked)}"


def test_markdown_links_resolve():
    docs = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for doc in docs:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{doc.name}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text()):
                broken.append(f"{doc.name}: {target} (no such heading)")
    assert not broken, broken


def test_cli_help_lists_the_subcommands():
    out = subprocess.run([sys.executable, "-m", "devise_utils", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for cmd in ("download", "prepare", "run", "train", "index", "search", "tag", "label",
                "export", "demo"):
        assert re.search(rf"^\s+{cmd}\b", out, re.M) or f"{{{cmd}" in out or f",{cmd}" in out, cmd
