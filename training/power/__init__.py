"""The power forecaster: features, windows, the LSTM, its training on Ray Train, calibration and inference."""
