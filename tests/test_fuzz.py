"""The fuzz corpus (tests/fuzz): every reader gives an image, a table or chexcft's own clear error on damaged input.

`make test` runs a seeded sample of the corpus (every seed file plus ~200 mutations); `make fuzz` (or
CHEXCFT_FUZZ=full) runs all of it and prints the counts per format.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import pytest

from tests.fuzz.corpus import FORMATS, MUTATIONS, Case, generate
from tests.fuzz.harness import FAILURES, run_cases, summary

FULL = os.environ.get("CHEXCFT_FUZZ", "") == "full"
SAMPLE = 150


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    return generate(tmp_path_factory.mktemp("fuzz"), seed=0)


def test_corpus_covers_every_input_and_mutation(corpus: list[Case]) -> None:
    assert len(corpus) >= 500
    assert {c.format for c in corpus} == set(FORMATS) >= {"dicom", "png", "jpeg", "chexpert", "nih", "mimic"}
    assert {c.mutation for c in corpus} == set(MUTATIONS) | {"original"}
    by_format = Counter(c.format for c in corpus)
    assert min(by_format.values()) >= 100, by_format
    # Seeded: the same seed gives byte-identical files.
    subset = {name: FORMATS[name] for name in ("png", "nih")}
    again = generate(Path(corpus[0].path).parents[1].with_name("fuzz-again"), seed=0, formats=subset)
    first = {c.id: c for c in corpus}
    assert again and all(Path(first[c.id].path).read_bytes() == Path(c.path).read_bytes() for c in again)


def _sample(cases: list[Case]) -> list[Case]:
    """A seeded sample of about SAMPLE cases: every mutation kind and every non-DICOM seed file at least once."""
    rng = random.Random(0)
    chosen = {c.id for c in cases if c.mutation == "original" and c.format != "dicom"}
    for mutation in MUTATIONS:
        kind = [c for c in cases if c.mutation == mutation]
        chosen.update(c.id for c in rng.sample(kind, min(4, len(kind))))
    rest = [c for c in cases if c.id not in chosen]
    chosen.update(c.id for c in rng.sample(rest, max(0, SAMPLE - len(chosen))))
    return [c for c in cases if c.id in chosen]


def test_every_case_reads_or_fails_clearly(corpus: list[Case], tmp_path: Path) -> None:
    cases = corpus if FULL else _sample(corpus)
    results = run_cases(cases, workers=2)
    report = summary(results)
    print(report)
    (tmp_path / "fuzz-results.json").write_text(json.dumps(results, indent=1))
    failed = [r for r in results if r["verdict"] in FAILURES]
    assert not failed, report
    verdicts = Counter(r["verdict"] for r in results)
    assert verdicts["read"] > 0 and verdicts["clear error"] > 0
    originals = [r for r in results if r["case"]["mutation"] == "original" and r["case"]["format"] != "dicom"]
    assert all(r["verdict"] == "read" for r in originals), [r for r in originals if r["verdict"] != "read"]


def test_the_harness_catches_each_kind_of_failure(tmp_path: Path) -> None:
    target = tmp_path / "x.png"
    target.write_bytes(b"x")
    names = {"hangs": "hang", "crashes": "crash", "raises_value_error": "exception", "allocates": "memory",
             "vague": "unclear error"}
    cases = [Case(f"bad-{i}", "png", "image", f"tests.fuzz.bad_readers:{name}", "x", "none", str(target))
             for i, name in enumerate(names)]
    cases.append(Case("good", "png", "image", "chexcft.io:read_xray", "x", "none", str(target)))
    results = {r["case"]["id"]: r["verdict"] for r in run_cases(cases, case_seconds=2, memory=2**31)}
    assert [results[f"bad-{i}"] for i in range(len(names))] == list(names.values())
    assert results["good"] == "clear error"  # one byte is not an image; the runs after a crash or hang still ran
