"""Data: readers, preprocessing, cache, loader, augmentation, synthetic study."""
