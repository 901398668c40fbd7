"""Training: distillation losses, training sources, the resumable loop and student wrappers."""
