"""The autograd reference: ``MLP`` (plain torch.nn) and ``MLPClassifier`` (its LightningModule)."""
from .model import MLP
from .module import MLPClassifier

__all__ = ["MLP", "MLPClassifier"]
