"""Training: the dataset, augmentations, the engine, its config, AMP and new samples."""
