"""The Ray Tune glue: the trainable every trial runs, the per-cell searcher and scheduler, the
phase stopper, and the one module that talks to Tune's reporting API and the driver callback that
mirrors each trial into MLflow."""
