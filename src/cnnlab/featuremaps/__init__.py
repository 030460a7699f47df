"""Feature maps: pick early, middle and late layers from a model's graph and interesting channels."""
