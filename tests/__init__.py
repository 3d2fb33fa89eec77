"""Vigil test suite."""
