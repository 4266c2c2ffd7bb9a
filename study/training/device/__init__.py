"""What a trial does differently on a GPU (`accelerator`: mixed precision, cuDNN autotuning, data
kept on the device) and how busy the GPU was (`gpu_monitor`); no-ops on CPU."""
