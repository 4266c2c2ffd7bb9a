"""What a trial's network is fed: the study's data built once (`study_data`), and whole images or
random patches with sliding-window inference (`strategies`, `patches`)."""
