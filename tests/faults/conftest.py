"""The crash matrix prints its points x outcomes table at the end of the session."""

from __future__ import annotations

import pytest

from tests.faults.crash import matrix_summary


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    table = matrix_summary()
    if table:
        terminalreporter.section("crash points x outcomes (tests/faults)")
        terminalreporter.write_line(table)
