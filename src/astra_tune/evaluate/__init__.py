"""Evaluation: did fine-tuning help, by how much, and where."""
