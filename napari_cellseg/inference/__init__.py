"""Running a model: tiles, test-time flips, thresholds, scale, stacks, streaming, shards, folders."""
