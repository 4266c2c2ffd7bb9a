"""Reading a study back from MLflow into tidy pandas frames: trials, per-image scores, learning curves.

The only part of `analysis` that talks to the tracking store; everything above it works on frames.
"""
