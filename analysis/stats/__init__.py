"""Statistics on the frames of `analysis.read`: per-group summaries, paired tests between arms,
robustness summaries, conformal coverage, FBR placement, and the study's findings.
"""
