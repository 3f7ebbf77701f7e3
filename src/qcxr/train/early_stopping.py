"""Early stopping on validation loss (Sec. III-F): stop after `patience` epochs without a new
lowest validation loss, or at `max_epochs`; the best checkpoint is the lowest validation loss."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class EarlyStopping:
    patience: int
    max_epochs: int
    best_loss: float = math.inf
    best_epoch: int = 0  # 1-based epoch of the best validation loss; 0 = none yet
    bad_epochs: int = 0  # epochs since the best
    epochs_done: int = 0

    def update(self, val_loss: float) -> tuple[EarlyStopping, bool]:
        """The state after one more epoch, and whether that epoch is the new best (strictly lower)."""
        epoch = self.epochs_done + 1
        if val_loss < self.best_loss:
            return replace(
                self, best_loss=val_loss, best_epoch=epoch, bad_epochs=0, epochs_done=epoch
            ), True
        return replace(self, bad_epochs=self.bad_epochs + 1, epochs_done=epoch), False

    @property
    def stop_reason(self) -> str | None:
        """ "early_stop", "max_epochs" or None (keep training)."""
        if self.bad_epochs >= self.patience:
            return "early_stop"
        if self.epochs_done >= self.max_epochs:
            return "max_epochs"
        return None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["best_loss"] = None if math.isinf(self.best_loss) else self.best_loss
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EarlyStopping:
        data = dict(data)
        data["best_loss"] = math.inf if data.get("best_loss") is None else data["best_loss"]
        return cls(**data)
