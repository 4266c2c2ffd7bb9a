"""The run layer: everything that talks to Ray. The driver (`engine`), the Tune glue (`trainable`,
`searcher`, `scheduler`, `tune_report`, `tune_callback`), the workers (`warm_workers`,
`ray_reaper`), job submission (`submit`) and the study folder that makes a study resumable
(`study_dir`, `reconcile`, `preflight`).
"""
