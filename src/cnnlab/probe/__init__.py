"""Linear probe: a pretrained CNN as a fixed feature extractor plus a linear classifier.

``extract`` (penultimate features, batched, precision check), ``cache`` (features on disk,
keyed by model, weights, transform and file list), ``classify`` (C chosen on a validation
split, metrics), ``run`` (the ``probe`` verb).
"""
