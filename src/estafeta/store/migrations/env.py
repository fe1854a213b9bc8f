"""Alembic environment: runs on the connection handed over by `estafeta.store.db.migrate`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from estafeta.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` command line during development: -x url=...
    url = context.get_x_argument(as_dictionary=True).get("url", "sqlite:///estafeta.db")
    connection = create_engine(url).connect()

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
