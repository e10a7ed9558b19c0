"""The real-time engine: streaming sessions, the window scheduler and the batcher.

Pure Python over :mod:`models` and :mod:`server.perception`; it never imports FastAPI. The API
layer feeds it decoded messages and hands it a sink for what goes back to each client.
"""
