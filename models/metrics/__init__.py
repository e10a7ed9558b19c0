"""Evaluation metrics: the REACT appropriateness metrics, pose smoothness, personality accuracy."""
