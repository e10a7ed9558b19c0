"""Real personality recognition from personalised generator weights (the RPR paper)."""
