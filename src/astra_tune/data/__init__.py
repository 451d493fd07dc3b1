"""Data preparation: read, detect format, normalize, clean, filter, deduplicate, split, report."""
