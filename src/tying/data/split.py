"""`Split`: a train/test pair of tensors, the common currency of the data loaders."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Split"]


@dataclass
class Split:
    """Train and test tensors. Images are float32 (N, 1, H, W) in [0, 1]; labels int64 (N,)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    name: str

    def subset_train(self, per_class: int, generator: torch.Generator | None = None) -> Split:
        """Keep ``per_class`` training examples of each class (chosen at random); test unchanged."""
        if per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {per_class}")
        keep = []
        for c in range(self.n_classes):
            idx = torch.nonzero(self.y_train == c).flatten()
            if len(idx) < per_class:
                raise ValueError(f"class {c} of {self.name} has {len(idx)} training examples, "
                                 f"fewer than per_class={per_class}")
            keep.append(idx[torch.randperm(len(idx), generator=generator)[:per_class]])
        sel = torch.cat(keep)
        return Split(self.x_train[sel], self.y_train[sel], self.x_test, self.y_test,
                     self.n_classes, f"{self.name}[{per_class}/class]")
