"""Personalisation: a listener's style vector, low-rank weight shifts from it, and enrolments."""
