"""A self-contained, offline submission folder (CodaLab style): `python src/predict.py INPUT_CSV OUTPUT_CSV`.

Layout of a bundle:
    README.md            how to run it, the exact dependencies and versions, the models and their checksums
    bundle.json          settings (view aggregation, frontal-only, TTA, stored prior, the ensemble's combination
                         rule and calibration from chexcft.combination), models, file checksums
    models/NN-<run>/     config.json, weights/<which>.safetensors, cft/ (head + calibration) when the run has them
    src/predict.py       the program (chexcft/bundle_template/predict.py)
    src/chexcft/...      the chexcft modules the program imports, copied from this installation at bundle time

The vendored modules are found by following the imports (module level and inside functions) of the entry
modules, so the bundle runs the very code `chexcft submit` runs and gives the same numbers.

A bundle is portable: every path in it is relative to the bundle, and nothing names the build machine. The
runs' config.json and weights metadata keep their settings with absolute paths reduced to names
(chexcft.portable); building refuses to finish if a build-machine path is still found in a bundled file.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import chexcft
from chexcft.errors import ChexcftError, InvalidRunError, SubmissionError
from chexcft.fileio import atomic_directory, atomic_write_json, atomic_write_text, file_sha256
from chexcft.portable import found_markers, machine_markers, portable, portable_text
from chexcft.provenance import package_versions
from chexcft.schema import COMPETITION_TASKS

BUNDLE_FORMAT = 1
PROGRAM = "src/predict.py"
ENTRY_MODULES: tuple[str, ...] = ("chexcft.submission", "chexcft.predict", "chexcft.runs", "chexcft.data")
# Reached only through code paths a bundle never takes (CLI, building bundles, expanding ensemble dirs, training).
NOT_VENDORED: tuple[str, ...] = (
    "chexcft.cli", "chexcft.bundle", "chexcft.ensemble", "chexcft.training",
)
RUN_FILES: tuple[str, ...] = ("config.json", "cft/head.safetensors", "cft/calibration.json")
# Packages used at run time without an import statement (pydicom's decoders for compressed DICOM).
PLUGINS: dict[str, tuple[str, ...]] = {"pydicom": ("pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg")}


@dataclass
class BundleInfo:
    """What a built bundle holds."""

    path: Path
    models: list[str]
    vendored: list[str]
    dependencies: dict[str, str | None]
    settings: dict[str, Any] = field(default_factory=dict)


def _excluded(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in NOT_VENDORED)


def _module_file(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return None
    return Path(spec.origin)


def _imports(module: str, source: Path) -> tuple[set[str], set[str]]:
    """(chexcft modules, top-level third-party/stdlib names) imported anywhere in a module's source."""
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    is_package = source.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    internal: set[str] = set()
    external: set[str] = set()

    def add(name: str) -> None:
        if name == "chexcft" or name.startswith("chexcft."):
            internal.add(name)
        else:
            external.add(name.split(".")[0])

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            add(target)
            if target.startswith("chexcft"):
                for alias in node.names:
                    if _module_file(f"{target}.{alias.name}") is not None:
                        internal.add(f"{target}.{alias.name}")
    return internal, external


def vendored_modules(entries: Sequence[str] = ENTRY_MODULES) -> tuple[dict[str, Path], set[str]]:
    """The chexcft modules the bundle program needs ({name: source file}) and the top-level names they import."""
    found: dict[str, Path] = {}
    external: set[str] = set()
    pending = list(entries)
    while pending:
        module = pending.pop()
        if module in found or _excluded(module):
            continue
        source = _module_file(module)
        if source is None or source.suffix != ".py":
            raise ChexcftError(f"cannot vendor {module}: its source file was not found")
        found[module] = source
        parts = module.split(".")
        pending.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages' __init__
        internal, names = _imports(module, source)
        pending.extend(internal)
        external |= names
    return found, external


def dependency_versions(import_names: Iterable[str]) -> dict[str, str | None]:
    """Installed distributions (name -> version) behind the given top-level import names, stdlib left out."""
    providers = metadata.packages_distributions()
    distributions: set[str] = set()
    for name in import_names:
        if name in sys.stdlib_module_names or name == "chexcft" or name.startswith("_"):
            continue
        distributions.update(providers.get(name, [name]))
    for distribution in list(distributions):
        distributions.update(PLUGINS.get(distribution, ()))
    return dict(sorted(package_versions(tuple(distributions)).items(), key=lambda item: item[0].lower()))


def _portable_metadata(value: str, run_dir: Path) -> str:
    """A safetensors metadata value made portable (JSON values, such as the model spec, field by field)."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return portable_text(value, run_dir)
    return json.dumps(portable(parsed, run_dir)) if isinstance(parsed, (dict, list)) else portable_text(value, run_dir)


def _copy_portable(source: Path, target: Path, run_dir: Path) -> None:
    """Copy one run file; JSON and safetensors metadata with build-machine paths made portable."""
    if source.suffix == ".json":
        from chexcft.fileio import read_json

        atomic_write_json(target, portable(read_json(source), run_dir))
        return
    if source.suffix == ".safetensors":
        from safetensors.torch import save_file

        from chexcft.models.weights import read_safetensors

        tensors, metadata = read_safetensors(source)
        cleaned = {key: _portable_metadata(value, run_dir) for key, value in metadata.items()}
        if cleaned != metadata:
            save_file(tensors, str(target), metadata=cleaned)
            return
    shutil.copy2(source, target)


def _copy_run(run_dir: Path, target: Path, which: str) -> list[str]:
    """Copy what prediction needs from a run directory (made portable); return the copied relative paths."""
    weights = f"weights/{which}.safetensors"
    if not (run_dir / weights).is_file():
        raise InvalidRunError(f"{run_dir}: no {weights} to put in the bundle")
    copied = []
    for relative in (weights, *RUN_FILES):
        source = run_dir / relative
        if source.is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            _copy_portable(source, target / relative, run_dir.resolve())
            copied.append(relative)
    if "config.json" not in copied:
        raise InvalidRunError(f"{run_dir}: no config.json to put in the bundle")
    return copied


def _readme(settings: Mapping[str, Any], dependencies: Mapping[str, str | None], checksums: Mapping[str, str]) -> str:
    unreadable = (
        "A study whose images are all unreadable gets the training prevalence stored in bundle.json (named on stderr)."
        if settings["fill_missing"]
        else "A study whose images are all unreadable stops it with exit status 2, naming the study."
    )
    frontal = "yes (other views when a study has no readable frontal)" if settings["frontal_only"] else "no"
    pins = [f"{name}=={version}" if version else f"{name}  # not installed when bundled"
            for name, version in dependencies.items()]
    lines = [
        "# chexcft submission bundle",
        "",
        "Writes one row per study (`Study` + the five competition tasks) for the images listed in INPUT_CSV:",
        "",
        "```",
        "python src/predict.py INPUT_CSV OUTPUT_CSV [--root ROOT] [--device auto|cpu|cuda] [--batch-size N]",
        "```",
        "",
        "Image paths in INPUT_CSV are relative to ROOT; by default the folder of INPUT_CSV when the paths' first",
        "folder is there (as `chexcft submit` does), else the current directory. Runs offline: the weights are in",
        f"`models/`, the code in `src/` (chexcft {settings['chexcft_version']}, vendored); it opens no network",
        "connection and writes nothing but OUTPUT_CSV. Unreadable images are listed on stderr and skipped.",
        unreadable,
        "Bad input (missing file, bad CSV) ends with exit status 2 and a one-line message.",
        "",
        "## Settings",
        "",
        f"- views combined by: {settings['views']}",
        f"- frontal views only: {frontal}",
        f"- test-time augmentation: {settings['tta']}",
        f"- weights: {settings['which']}, {len(settings['models'])} model(s)"
        + (f", combined by {settings['combination']['rule']}"
           + (" + the ensemble's calibration" if settings["combination"]["calibration"] else "")
           if settings.get("combination") else ", with its own calibration"),
        "",
        "## Dependencies (Python " + settings["python"] + "; the versions this bundle was built and tested with)",
        "",
        "```",
        *pins,
        "```",
        "",
        "## Files (sha256)",
        "",
        *[f"- `{path}` {digest}" for path, digest in checksums.items()],
        "",
    ]
    return "\n".join(lines)


def _recorded_paths(runs: Sequence[Path]) -> list[str]:
    """The run folders and every absolute path their config.json records (data, cache, output folders)."""
    from chexcft.runs import read_config

    found: list[str] = []
    for run in runs:
        found += [str(run.resolve()), str(run.resolve().parent)]
        config = read_config(run)
        for block in (config, config.get("settings") or {}):
            found += [str(v) for v in block.values() if isinstance(v, str) and os.path.isabs(v)]
    return found


def _refuse_machine_paths(staging: Path, runs: Sequence[Path]) -> None:
    """Stop the build if a bundled JSON/Markdown file or weights metadata still names a build-machine path."""
    from chexcft.models.weights import read_safetensors

    markers = machine_markers(_recorded_paths(runs))
    for path in sorted(staging.rglob("*")):
        if path.suffix in (".json", ".md"):
            text = path.read_text(encoding="utf-8")
        elif path.suffix == ".safetensors":
            text = json.dumps(read_safetensors(path)[1])
        else:
            continue
        hits = found_markers(text, markers)
        if hits:
            raise ChexcftError(
                f"bundle file {path.relative_to(staging)} would carry build-machine paths ({', '.join(hits[:3])}); "
                "not bundled"
            )


def build_bundle(
    model_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    views: str = "max",
    frontal_only: bool = False,
    fill_missing: str | None = None,
    tta: str = "none",
    which: str = "best",
    force: bool = False,
) -> BundleInfo:
    """Build the bundle folder `out` (atomically: a temporary folder renamed into place)."""
    from chexcft.predict import TTA_MODES, resolve_models, run_observations, shared_observations
    from chexcft.runs import load_run
    from chexcft.submission import AGGREGATIONS, training_prior

    if views not in AGGREGATIONS:
        raise SubmissionError(f"unknown --views {views!r}; use one of {', '.join(AGGREGATIONS)}")
    if tta not in TTA_MODES:
        raise ChexcftError(f"unknown --tta {tta!r}; use one of {', '.join(TTA_MODES)}")
    if fill_missing not in (None, "prior"):
        raise SubmissionError(f"unknown --fill-missing {fill_missing!r}; the only choice is 'prior'")
    out = Path(out).expanduser().resolve()
    if out.exists() and not force:
        raise ChexcftError(f"{out} already exists; choose a new folder or pass --force to replace it")
    if out.exists() and not (out.is_dir() and ((out / "bundle.json").is_file() or not any(out.iterdir()))):
        raise ChexcftError(f"{out} is not an earlier bundle (no bundle.json); --force only replaces a bundle folder")
    runs, combination = resolve_models(model_dirs)
    observations, _ = shared_observations([run_observations(load_run(run, which=which)) for run in runs])
    lacking = [task for task in COMPETITION_TASKS if task not in observations]
    if lacking:
        raise SubmissionError(f"the models do not all predict {', '.join(lacking)}, so they cannot make a submission")
    prior, prior_source = training_prior(runs) if fill_missing else (None, None)

    with atomic_directory(out) as staging:
        model_names = []
        checksums: dict[str, str] = {}
        for index, run in enumerate(runs):
            name = f"models/{index:02d}-{run.resolve().name}"
            for relative in _copy_run(run, staging / name, which):
                checksums[f"{name}/{relative}"] = file_sha256(staging / name / relative)
            model_names.append(name)
        modules, imported = vendored_modules()
        package_root = Path(chexcft.__file__).resolve().parent.parent
        for module, source in sorted(modules.items()):
            target = staging / "src" / source.resolve().relative_to(package_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        template = resources.files("chexcft") / "bundle_template" / "predict.py"
        (staging / PROGRAM).write_text(template.read_text(encoding="utf-8"), encoding="utf-8")
        dependencies = dependency_versions(imported)
        settings: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "chexcft_version": chexcft.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": sys.version.split()[0],
            "models": model_names,
            "sources": [run.resolve().name for run in runs],
            "which": which,
            "views": views,
            "frontal_only": frontal_only,
            "tta": tta,
            "fill_missing": fill_missing,
            "combination": portable(combination.to_dict()) if combination is not None else None,
            "prior": prior,
            "prior_source": portable_text(prior_source) if prior_source else None,
            "dependencies": dependencies,
            "files": checksums,
        }
        atomic_write_json(staging / "bundle.json", settings)
        atomic_write_text(staging / "README.md", _readme(settings, dependencies, checksums))
        _refuse_machine_paths(staging, runs)
    return BundleInfo(
        path=out, models=model_names, vendored=sorted(modules), dependencies=dependencies, settings=settings
    )
