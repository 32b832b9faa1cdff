"""Models, losses, metrics, the trainer and checkpoints. Imports torch lazily."""
