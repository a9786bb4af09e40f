"""SMART warnings in the app: the drives panel and the store screen show them."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from dmedia_tui import smart
from dmedia_tui.tui.app import DmediaApp
from dmedia_tui.tui.screens.store import StoreScreen
from dmedia_tui.tui.widgets.drives import DrivesPanel
from tests.tui.test_app import SIZE, select_store, text_of, until

PREFAIL = (
    Path(__file__).parents[1] / "smart_fixtures" / "prefail-wdc-wd4000fyyx-387-reallocated.json"
)


async def test_smart_warning_shows_in_drives_panel_and_store_screen(tlib):
    report = smart.parse(json.loads(PREFAIL.read_text()), "/dev/sdb")
    verdict = smart.judge(report)
    sid = tlib.stores["studio-int"]
    smart.save_readings(
        tlib.ms.config.data_dir,
        {
            sid: {
                "device": "/dev/sdb",
                "report": report.to_json(),
                "state": verdict.state,
                "reasons": list(verdict.reasons),
                "time": 0,
            }
        },
    )
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        panel = app.screen.query_one(DrivesPanel)
        assert "studio-int" in text_of(panel)
        assert "SMART 387 reallocated sectors" in text_of(panel)
        select_store(app, "studio-int")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, StoreScreen))
        await pilot.pause()
        console = Console(record=True, width=120, file=io.StringIO())
        console.print(app.screen.query_one("#store-details").content)
        details = console.export_text()
        assert "SMART warning: 387 reallocated sectors" in details
