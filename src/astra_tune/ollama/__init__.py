"""Ollama: Go templates, Modelfiles, template translation, pushes to an Ollama server."""
