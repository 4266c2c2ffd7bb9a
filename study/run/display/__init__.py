"""What the user watches while a study runs: where it stands (`progress`), how that is drawn
(`console`), and the study's log file for what the libraries say (`library_log`)."""
