"""The Rapport service: perception, the real-time engine, the API, the store and the CLI.

Imports ``models``; never ``export`` and never models' training code.
"""
