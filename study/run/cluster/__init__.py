"""The Ray cluster a study runs on: joining or starting it, how many trials it holds, workers
that start warm, the reaper of a killed driver's Ray processes, and submitting a study as a Ray job."""
