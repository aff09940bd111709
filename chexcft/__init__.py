"""chexcft: chest X-ray classification with Category-wise Fine-Tuning on CheXpert-style data."""

from __future__ import annotations

__version__ = "0.1.0"
