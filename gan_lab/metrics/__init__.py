"""Evaluation metrics: FID/KID/IS, precision/recall, density/coverage, Parzen, neighbours, class accuracy, D scores."""
from gan_lab.metrics.classes import class_accuracy
from gan_lab.metrics.features import (DomainAutoencoder, DomainClassifier, FeatureExtractor, extract_all,
                                      load_extractor, weights_checksum)
from gan_lab.metrics.fid import frechet_distance, inception_score, kernel_distance
from gan_lab.metrics.manifold import density_coverage, precision_recall
from gan_lab.metrics.neighbours import memorisation, nearest_neighbours
from gan_lab.metrics.parzen import parzen_evaluate, parzen_log_likelihood, select_sigma
from gan_lab.metrics.records import append_evaluation, update_metrics_json
from gan_lab.metrics.suite import METRICS, Evaluator

__all__ = ["class_accuracy", "DomainAutoencoder", "DomainClassifier", "FeatureExtractor", "extract_all", "load_extractor",
           "weights_checksum", "frechet_distance", "inception_score", "kernel_distance", "precision_recall",
           "density_coverage", "memorisation", "nearest_neighbours", "parzen_evaluate", "parzen_log_likelihood",
           "select_sigma", "append_evaluation", "update_metrics_json", "METRICS", "Evaluator"]
