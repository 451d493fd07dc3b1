"""A/B experiments and rollouts: assignment, definitions, feedback, statistics."""
