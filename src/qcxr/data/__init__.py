"""Data: readers, preprocessing, cache, loader, augmentation, synthetic study."""

# What a cache build does with a missing or undecodable image (`ImageCache.build`,
# `qcxr cache build --on-bad-image`): raise an error naming it, or skip and report it.
ON_BAD_IMAGE = ("error", "skip")
