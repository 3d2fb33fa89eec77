"""Simulated patients and devices. They reach Vigil only through its public doors (HTTP today)."""
