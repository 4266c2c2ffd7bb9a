"""What a study leaves behind and reads back on resume: the study folder (`study_dir`), the
MLflow study run, what a killed driver left put straight (`reconcile`), the study-wide GPU figure."""
