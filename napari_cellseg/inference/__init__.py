"""Running a model: tiles, test-time augmentation, thresholds, scale, stacks, streaming, shards, folders."""
