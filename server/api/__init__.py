"""The HTTP and WebSocket layer (FastAPI): the only package that imports it."""
