"""Class accuracy of class-conditional samples, judged by the feature extractor's classifier."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor


def class_accuracy(predicted: Tensor, labels: Tensor, class_names: Sequence[str]) -> dict:
    """Overall accuracy and accuracy per class name (classes without samples are left out)."""
    predicted, labels = predicted.cpu(), labels.cpu()
    correct = predicted == labels
    per_class = {}
    for c, name in enumerate(class_names):
        mask = labels == c
        if mask.any():
            per_class[str(name)] = round(float(correct[mask].double().mean()), 4)
    return {"value": float(correct.double().mean()), "per_class": per_class}
