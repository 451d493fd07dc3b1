"""Base models: the catalog, spec resolution, GGUF import, and tiny random models for tests."""
