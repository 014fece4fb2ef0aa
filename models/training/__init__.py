"""The training job: data, split, model, loop, evaluation, calibration, export and publishing."""
