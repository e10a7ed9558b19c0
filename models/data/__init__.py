"""Data: the REACT2024 layout, the synthetic dyadic world, loading and the 25-d emotion view."""
