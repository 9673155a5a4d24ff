"""`clipvis train`: data, configs and the training loop (the criterion and matcher live in clipvis.model)."""
