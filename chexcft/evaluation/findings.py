"""Which findings to evaluate: columns matched by name across files, `prob_` prefixes, NIH <-> CheXpert vocabularies.

Names are compared after dropping a `prob_` prefix, turning `_` into spaces and ignoring case, so `prob_Effusion`,
`Effusion` and `effusion` are one finding, as are `Pleural_Thickening` and `Pleural Thickening`. When one side
names its findings in NIH's vocabulary and the other in CheXpert's, the NIH side is translated through the one
mapping table, chexcft.data.nih.NIH_TO_CHEXPERT: a CheXpert observation is the maximum of the NIH columns that map
to it (for 0/1 labels: "any of them is present", the rule of chexcft.data.nih; for scores: the highest).
Findings only one side has are listed as such, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from chexcft.data.nih import NIH_TO_CHEXPERT
from chexcft.errors import ChexcftError
from chexcft.schema import COMPETITION_TASKS, METADATA_COLUMNS, OBSERVATIONS, STUDY_COLUMN

PREFIX = "prob_"
TASK_SETS: tuple[str, ...] = ("competition", "all")
# Columns that describe an image or a patient, never a finding.
NOT_FINDINGS: frozenset[str] = frozenset(
    name.casefold() for name in (*METADATA_COLUMNS, STUDY_COLUMN, "Image Index", "Finding Labels", "Patient ID",
                                 "Patient Age", "Patient Gender", "View Position", "Follow-up #", "split",
                                 "folder_label", "n_findings", "OriginalImage[Width", "Height]",
                                 "OriginalImagePixelSpacing[x", "y]", "subject_id", "study_id", "dicom_id",
                                 "ViewPosition", "abs_path", "study", "patient", "view")
)


def canonical(name: str) -> str:
    """The matching form of a column name: no `prob_` prefix, `_` as space, case-folded, trimmed."""
    text = str(name).strip()
    if text.casefold().startswith(PREFIX):
        text = text[len(PREFIX):]
    return " ".join(text.replace("_", " ").split()).casefold()


_NIH = {canonical(name) for name in NIH_TO_CHEXPERT}
_CHEXPERT = {canonical(name) for name in OBSERVATIONS}
NIH_ONLY = frozenset(_NIH - _CHEXPERT)
CHEXPERT_ONLY = frozenset(_CHEXPERT - _NIH)


def vocabulary(names: Sequence[str]) -> str | None:
    """'nih' or 'chexpert' when the names use only that vocabulary's own findings, else None (shared or mixed)."""
    keys = {canonical(n) for n in names}
    nih, chexpert = bool(keys & NIH_ONLY), bool(keys & CHEXPERT_ONLY)
    if nih and not chexpert:
        return "nih"
    if chexpert and not nih:
        return "chexpert"
    return None


def finding_columns(columns: Sequence[str], key: str) -> list[str]:
    """The columns of a file that may hold findings: every column but the key and known metadata."""
    return [c for c in columns if c != key and c.casefold() not in NOT_FINDINGS
            and not c.casefold().startswith("decision_")]  # chexcft predict --decisions columns


def _to_chexpert(columns: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    """NIH columns -> {CheXpert observation: source columns}, and the NIH columns with no counterpart."""
    by_key = {canonical(c): c for c in columns}
    mapped: dict[str, list[str]] = {}
    unmapped: list[str] = []
    for nih, observation in NIH_TO_CHEXPERT.items():
        column = by_key.get(canonical(nih))
        if column is None:
            continue
        if observation is None:
            unmapped.append(column)
        else:
            mapped.setdefault(observation, []).append(column)
    passthrough = [c for c in columns if canonical(c) not in _NIH]
    ordered = {o: mapped[o] for o in OBSERVATIONS if o in mapped}
    ordered.update({c: [c] for c in passthrough})
    return ordered, unmapped


@dataclass
class FindingMatch:
    """Evaluated findings (ground-truth names), their source columns per file, and what one side lacks."""

    tasks: tuple[str, ...]
    groundtruth: dict[str, list[str]]
    predictions: dict[str, dict[str, list[str]]]
    not_predicted: dict[str, list[str]] = field(default_factory=dict)  # per file: ground-truth findings it lacks
    not_in_groundtruth: dict[str, list[str]] = field(default_factory=dict)  # per file: its findings the truth lacks
    no_counterpart: dict[str, list[str]] = field(default_factory=dict)  # per file: NIH findings CheXpert lacks
    mapping: dict[str, str] = field(default_factory=dict)  # "Pleural Effusion" -> "Effusion" notes
    unlabelled: list[str] = field(default_factory=list)  # ground-truth columns with no label at all

    def lacking(self, name: str) -> dict[str, list[str]]:
        """For one prediction file: findings it lacks, findings the ground truth lacks, findings without a mapping."""
        return {"not_predicted": self.not_predicted.get(name, []),
                "not_in_groundtruth": self.not_in_groundtruth.get(name, []),
                "no_counterpart": self.no_counterpart.get(name, []) + self.no_counterpart.get("ground truth", [])}


def _resolve(requested: str, available: Mapping[str, str]) -> str | None:
    """The available finding (canonical -> name) a requested name means, through the NIH mapping if needed."""
    key = canonical(requested)
    if key in available:
        return available[key]
    sources = [n for n, o in NIH_TO_CHEXPERT.items() if o is not None and canonical(o) == key]
    hits = [available[canonical(s)] for s in sources if canonical(s) in available]
    if len(sources) == 1 and hits:
        return hits[0]
    target = NIH_TO_CHEXPERT.get(requested) or next(
        (o for n, o in NIH_TO_CHEXPERT.items() if canonical(n) == key and o is not None), None)
    if target is not None and sum(1 for o in NIH_TO_CHEXPERT.values() if o == target) == 1:
        return available.get(canonical(target))
    return None


def parse_tasks(spec: str | None) -> str | list[str] | None:
    """`competition`, `all`, None (automatic) or the list of names in `A,B,...`."""
    if spec is None or spec.strip() == "":
        return None
    if spec.strip() in TASK_SETS:
        return spec.strip()
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise ChexcftError(f"--tasks: no finding named in {spec!r}")
    return names


def match_findings(
    groundtruth_columns: Sequence[str], prediction_columns: Mapping[str, Sequence[str]], tasks: str | Sequence[str] | None,
    *, unlabelled: Sequence[str] = (),
) -> FindingMatch:
    """Match ground-truth and prediction columns by name (translating NIH <-> CheXpert) and pick the tasks.

    `tasks`: "competition" (the five), "all" (every labelled ground-truth finding that every file predicts), a list
    of names (or "A,B,..."), or None: the five when the ground truth has them under their CheXpert names, else all.
    `unlabelled`: ground-truth columns without a single label (reported, never evaluated).
    """
    if isinstance(tasks, str):
        tasks = parse_tasks(tasks)
    gt_vocab = vocabulary(groundtruth_columns)
    pred_vocabs = {name: vocabulary(cols) for name, cols in prediction_columns.items()}
    target = "chexpert" if "chexpert" in {gt_vocab, *pred_vocabs.values()} else None
    match = FindingMatch((), {}, {})
    skip = {canonical(c) for c in unlabelled}
    match.unlabelled = list(unlabelled)

    def translated(columns: Sequence[str], vocab: str | None, who: str) -> dict[str, list[str]]:
        columns = list(columns)
        if vocab == "nih" and target == "chexpert":
            mapped, unmapped = _to_chexpert(columns)
            if unmapped:
                match.no_counterpart[who] = unmapped
            for observation, sources in mapped.items():
                if sources != [observation]:
                    match.mapping[observation] = " | ".join(sources) if len(sources) > 1 else sources[0]
            return mapped
        return {c: [c] for c in columns}

    truth = {n: s for n, s in translated(groundtruth_columns, gt_vocab, "ground truth").items()
             if not all(canonical(c) in skip for c in s)}
    preds = {name: translated(cols, pred_vocabs[name], name) for name, cols in prediction_columns.items()}
    truth_keys = {canonical(n): n for n in truth}
    if tasks is None:
        tasks = "competition" if all(t in groundtruth_columns for t in COMPETITION_TASKS) else "all"
    common_per_file = {name: {canonical(n) for n in p} for name, p in preds.items()}
    if tasks == "all":
        chosen = [n for n in truth if all(canonical(n) in keys for keys in common_per_file.values())]
        if not chosen:
            raise ChexcftError(
                "no finding is both labelled in the ground truth and predicted by every file "
                f"(ground truth: {', '.join(truth) or 'none'}; "
                + "; ".join(f"{name}: {', '.join(p) or 'none'}" for name, p in preds.items()) + ")"
            )
    else:
        requested = list(COMPETITION_TASKS) if tasks == "competition" else list(tasks)
        chosen = []
        problems = []
        for name in requested:
            found = _resolve(name, truth_keys)
            if found is None:
                why = "has no labels" if canonical(name) in skip else "has no such column"
                problems.append(f"{name!r}: the ground truth {why} (it has {', '.join(truth) or 'none'})")
                continue
            lacking = [f for f, keys in common_per_file.items() if canonical(found) not in keys]
            if lacking:
                problems.append(f"{name!r}: not predicted by {', '.join(lacking)}")
                continue
            if found not in chosen:
                chosen.append(found)
        if problems:
            raise ChexcftError("--tasks: " + "; ".join(problems))
    match.tasks = tuple(chosen)
    match.groundtruth = {t: truth[t] for t in chosen}
    for name, p in preds.items():
        by_key = {canonical(n): n for n in p}
        match.predictions[name] = {t: p[by_key[canonical(t)]] for t in chosen}
        match.not_predicted[name] = [t for t in truth if canonical(t) not in by_key]
        match.not_in_groundtruth[name] = [n for n in p if canonical(n) not in truth_keys]
    return match
