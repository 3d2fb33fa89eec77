"""Tests of the simulated patients, devices and scenarios (no server needed)."""
