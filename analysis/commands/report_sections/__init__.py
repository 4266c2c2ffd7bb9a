"""The sections of `segstudy report`'s page, one module each (`analysis.commands.report` reads
the study and assembles them): design, results (perturbations, conditions, statistics, plots),
confidence, shift and findings, built from `blocks` (tables, figures, CSV files)."""
