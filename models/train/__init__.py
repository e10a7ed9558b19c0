"""Training recipes (flat functions over config dataclasses); the server never imports these."""
