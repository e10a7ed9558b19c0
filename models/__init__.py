"""All machine learning for Rapport: the face coefficient space, features, networks and data.

This package is the bottom layer: it never imports ``server`` or ``export``.
"""
