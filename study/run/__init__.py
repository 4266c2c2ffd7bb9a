"""The run layer: everything that talks to Ray, in sub-packages by job (docs/ARCHITECTURE.md 2):
`driver` (the study as a whole: `engine`, its phases, the confirm rounds, the preflight), `tune`
(the Tune glue: `trainable`, `searcher`, `scheduler`, `stopping`, `tune_report`, `tune_callback`),
`cluster` (Ray itself: joining or starting it, its capacity, warm workers, the reaper, job
submission), `record` (what makes a study resumable: the study folder, its MLflow study run,
`reconcile`) and `display` (what the user watches: progress, console, the study's log file).
"""
