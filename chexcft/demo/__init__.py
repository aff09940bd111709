"""The demo: the whole product on the bundled real images (chexcft.demo.pipeline), its data (chexcft.demo.data)
and its report (chexcft.demo.report)."""

from __future__ import annotations

from chexcft.demo.pipeline import (
    DEFAULT_MEMBERS,
    STAGES,
    STATE_FILE,
    DemoData,
    DemoResult,
    DemoSettings,
    mean_auc_table,
    run_demo,
    view_command,
)

__all__ = ["DEFAULT_MEMBERS", "STAGES", "STATE_FILE", "DemoData", "DemoResult", "DemoSettings", "mean_auc_table",
           "run_demo", "view_command"]
