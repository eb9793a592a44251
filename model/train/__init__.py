"""Training and evaluation (needs the `train` extra). Serving code never imports this package."""
