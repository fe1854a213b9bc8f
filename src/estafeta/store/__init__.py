"""Persistence: SQLAlchemy models, the engine, migrations, and every SQL statement the platform runs."""
