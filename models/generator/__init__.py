"""The reaction generator: configuration, denoiser network, low-rank shifts, schedule, samplers."""
