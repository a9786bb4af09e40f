"""Build the deterministic test library in a folder and run the app on it (tmux test).

Usage: python -m tests.tui.runner DIR [--read-only]
"""

from __future__ import annotations

import sys
from pathlib import Path

from dmedia_tui.tui.app import run_app
from tests.tui.library import build_library


def main(argv: list[str]) -> int:
    root = Path(argv[0])
    t = build_library(root / "lib")
    return run_app(t.ms, None, read_only="--read-only" in argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
