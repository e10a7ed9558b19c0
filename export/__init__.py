"""ONNX export, the onnxruntime backend and parity checks (arrives with the generator).

Imports ``models``; never ``server``.
"""
