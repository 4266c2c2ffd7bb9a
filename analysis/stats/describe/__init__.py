"""Descriptions of a study's numbers: summaries with intervals over seeds (`summary`), robustness
summaries (`robustness`), conformal coverage (`coverage`), FBR placement (`context`) and train x test
tables (`shift`)."""
