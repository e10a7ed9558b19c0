"""The 58-d face coefficient space and the renderable face model."""
