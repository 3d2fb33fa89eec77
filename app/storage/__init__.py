"""Persistence: models, engine, migrations."""
