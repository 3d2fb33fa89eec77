"""Vigil's clinical core: vital-sign vocabulary, alarm evaluation and alarm state.

Nothing here imports from `app`, `dashboard` or `simulators`.
"""
