"""Every module has its place in the layer contract that CI checks (lint-imports).

import-linter only constrains the modules a contract names: a new module left out of
pyproject.toml's layers could import anything. This makes leaving it out a failing test.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dmedia_tui"


def _layer_modules() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    main = next(c for c in config["contracts"] if c["type"] == "layers" and "containers" not in c)
    return {m.strip() for layer in main["layers"] for m in re.split(r"[|:]", layer)}


def _modules() -> set[str]:
    """Every module of the package, as a dotted name (packages' __init__ left out)."""
    out = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] != "__init__":
            out.add(".".join(parts))
    return out


def test_every_module_is_in_a_layer() -> None:
    layers = _layer_modules()
    unplaced = sorted(
        m
        for m in _modules()
        if not any(m == layer or m.startswith(layer + ".") for layer in layers)
    )
    assert not unplaced, f"add these to [tool.importlinter] layers in pyproject.toml: {unplaced}"


def test_the_contract_names_no_module_that_is_gone() -> None:
    modules = _modules()
    gone = sorted(
        layer
        for layer in _layer_modules()
        if not any(m == layer or m.startswith(layer + ".") for m in modules)
    )
    assert not gone, f"the layers in pyproject.toml name modules that do not exist: {gone}"


def test_the_presentation_reads_through_the_metastore() -> None:
    """The read rule (db/base.py, README): cli.py and tui/ read docs and the log through
    the MetaStore's reads, never through its Library (`ms.lib`, `engine.ms.lib`)."""
    files = [PACKAGE / "cli.py", *sorted((PACKAGE / "tui").rglob("*.py"))]
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\.lib\b", line) and not line.lstrip().startswith("#")
    ]
    assert not found, "read through the MetaStore instead:\n" + "\n".join(found)
