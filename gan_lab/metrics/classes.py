"""Class accuracy of class-conditional samples, judged by the feature extractor's classifier."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor


def class_accuracy(predicted: Tensor, labels: Tensor, class_names: Sequence[str]) -> dict:
    """Overall accuracy and accuracy per class name (classes without samples are left out)."""
    predicted, labels = predicted.cpu(), labels.cpu()
    correct = predicted == labels
    per_class = {str(name): round(float(correct[labels == c].double().mean()), 4)
                 for c, name in enumerate(class_names) if (labels == c).any()}
    return {"value": float(correct.double().mean()), "per_class": per_class}
