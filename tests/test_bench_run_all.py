"""bench/run_all.py: which script owns a RESULTS.md section, and how sections are kept and nested."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

RUN_ALL = Path(__file__).resolve().parent.parent / "bench" / "run_all.py"


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("bench_run_all", RUN_ALL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scripts_lists_every_benchmark_but_itself(run_all) -> None:
    names = [p.name for p in run_all.scripts()]
    assert "run_all.py" not in names and "predict_throughput.py" in names
    assert [p.stem for p in run_all.scripts(["predict_throughput"])] == ["predict_throughput"]
    with pytest.raises(SystemExit):
        run_all.scripts(["no_such_bench"])


def test_section_owner_matches_both_heading_styles(run_all) -> None:
    names = {"cft_speed": "cft_speed", "data_pipeline": "data_pipeline", "training_throughput": "train_throughput"}
    assert run_all._section_owner("cft_speed: CFT speed at CheXpert scale", names) == "cft_speed"
    assert run_all._section_owner("CFT speed (2026-11-21 23:50 UTC)", names) == "cft_speed"
    assert run_all._section_owner("Data pipeline", names) == "data_pipeline"
    assert run_all._section_owner("Training throughput", names) == "train_throughput"
    assert run_all._section_owner("Something else", names) is None
    assert run_all.script_names()["prediction_throughput"] == "predict_throughput"  # its docstring's title


def test_existing_sections_keeps_script_sections_and_unattributed_ones(run_all, tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text(
        "# Benchmark results\n\n## Machine\n\n- CPU: old\n\n"
        "## CFT speed (2026-11-21)\n\nfigures A\n\n### detail\n\nmore A\n\n"
        "## predict_throughput: Prediction throughput\n\nfigures B\n\n"
        "## Someone's notes\n\nkeep me\n"
    )
    sections = run_all.existing_sections(results)
    assert sections["cft_speed"].startswith("## CFT speed") and "more A" in sections["cft_speed"]
    assert sections["predict_throughput"].endswith("figures B")
    assert sections[run_all.UNMATCHED + "Someone's notes"].endswith("keep me")
    assert not any("CPU: old" in text for text in sections.values())


def test_a_scripts_own_headings_nest_under_run_alls(run_all) -> None:
    text = run_all.strip_title("# Benchmark results\n\n## CFT speed\n\nbody\n### sub\n")
    assert run_all.demote_headings(text) == "### CFT speed\n\nbody\n#### sub"


def test_gpu_check_is_registered_and_gets_its_cpu_smoke_mode_without_cuda(run_all, monkeypatch) -> None:
    import torch

    assert "gpu_check.py" in [p.name for p in run_all.scripts()]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_all.default_args("gpu_check") == ["--device", "cpu", "--quick"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert run_all.default_args("gpu_check") == [] and run_all.default_args("data_pipeline") == []
