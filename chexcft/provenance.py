"""What a run directory records about where it came from: package versions and the machine."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

TRACKED_PACKAGES: tuple[str, ...] = (
    "chexcft",
    "torch",
    "torchvision",
    "monai",
    "kornia",
    "numpy",
    "pandas",
    "scikit-learn",
    "nevergrad",
    "pydicom",
    "safetensors",
    "torchxrayvision",
)


def package_versions(packages: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Return the installed version of each package (None when it is not installed)."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def environment_info() -> dict[str, object]:
    """Return Python, platform and package versions for a run's config.json."""
    info: dict[str, object] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "packages": package_versions(),
    }
    try:
        import torch

        info["cuda_available"] = torch.cuda.is_available()
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return info
