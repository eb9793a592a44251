"""Pixels -> faces -> embeddings (inference side). Training and evaluation live in model.train."""
