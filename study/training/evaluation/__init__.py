"""How a trained model is judged: validation and per-image test scores (`evaluate`), the test
split under perturbations and shift (`conditions`), conformal bounds (`calibrated`), and the
learning gate (`learning`)."""
