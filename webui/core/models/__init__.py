"""Checkpoints: the folder registry, the single-file loader, the demo model, the merger."""
