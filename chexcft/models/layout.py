"""Head layout: which observations have one binary logit and which a 3-way (neg, pos, unc) softmax."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

MULTICLASS_ORDER: tuple[str, ...] = ("negative", "positive", "uncertain")


@dataclass(frozen=True)
class HeadLayout:
    """Head rows in observation order: a binary observation has 1 row, a multiclass one 3 rows (neg, pos, unc)."""

    observations: tuple[str, ...]
    multiclass: tuple[str, ...] = ()
    _rows: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "observations", tuple(self.observations))
        object.__setattr__(self, "multiclass", tuple(self.multiclass))
        if len(set(self.observations)) != len(self.observations) or not self.observations:
            raise ValueError(f"head layout needs distinct, non-empty observations, got {self.observations}")
        unknown = [obs for obs in self.multiclass if obs not in self.observations]
        if unknown:
            raise ValueError(f"multiclass observations {unknown} are not among the layout's observations")
        # Keep multiclass in observation order so that class_targets columns line up with it.
        object.__setattr__(self, "multiclass", tuple(obs for obs in self.observations if obs in self.multiclass))
        rows: list[tuple[int, ...]] = []
        start = 0
        for obs in self.observations:
            width = 3 if obs in self.multiclass else 1
            rows.append(tuple(range(start, start + width)))
            start += width
        object.__setattr__(self, "_rows", tuple(rows))

    @property
    def width(self) -> int:
        """Number of head outputs (rows of the head's weight)."""
        return self._rows[-1][-1] + 1

    @property
    def num_observations(self) -> int:
        """Number of observations C (columns of binary logits)."""
        return len(self.observations)

    def rows(self, observation: str) -> tuple[int, ...]:
        """Head rows of one observation: (row,) or (neg, pos, unc)."""
        return self._rows[self.observations.index(observation)]

    def binary_columns(self) -> tuple[int, ...]:
        """Column indices (in observations) of the binary observations."""
        return tuple(i for i, obs in enumerate(self.observations) if obs not in self.multiclass)

    def multiclass_rows(self) -> torch.Tensor:
        """(M, 3) long tensor of head rows (neg, pos, unc) per multiclass observation."""
        return torch.tensor([self.rows(obs) for obs in self.multiclass], dtype=torch.long).reshape(-1, 3)

    def positive_rows(self) -> torch.Tensor:
        """(C,) long tensor: the row read as "positive" per observation (the only row for binary ones)."""
        return torch.tensor([r[1] if len(r) == 3 else r[0] for r in self._rows], dtype=torch.long)

    def negative_rows(self) -> torch.Tensor:
        """(C,) long tensor: the negative row for multiclass observations, -1 for binary ones."""
        return torch.tensor([r[0] if len(r) == 3 else -1 for r in self._rows], dtype=torch.long)

    def binary_logits(self, raw: torch.Tensor) -> torch.Tensor:
        """(N, width) raw head outputs -> (N, C) binary logits (multiclass: l_pos - l_neg)."""
        pos = raw[..., self.positive_rows().to(raw.device)]
        neg_rows = self.negative_rows()
        if not self.multiclass:
            return pos
        is_mc = (neg_rows >= 0).to(raw.device)
        neg = raw[..., neg_rows.clamp(min=0).to(raw.device)]
        return pos - neg * is_mc.to(raw.dtype)

    def class_logits(self, raw: torch.Tensor) -> torch.Tensor:
        """(N, width) raw head outputs -> (N, M, 3) logits of the multiclass observations."""
        return raw[..., self.multiclass_rows().to(raw.device)]

    def split_logits(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(binary logits (N, C), class logits (N, M, 3)) for the losses: BCE on the first, CE on the second."""
        return self.binary_logits(raw), self.class_logits(raw)

    def to_dict(self) -> dict[str, list[str]]:
        """JSON-ready form (config.json and weights metadata)."""
        return {"observations": list(self.observations), "multiclass": list(self.multiclass)}

    @classmethod
    def from_dict(cls, data: dict[str, Sequence[str]]) -> HeadLayout:
        """Inverse of to_dict."""
        return cls(tuple(data["observations"]), tuple(data.get("multiclass", ())))
