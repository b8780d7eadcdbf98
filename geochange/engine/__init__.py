"""The sliding-window engine: plan windows, run a model on batches of them, blend, stream strips out."""
