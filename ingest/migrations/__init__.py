"""Alembic migrations of the catalogue (ingest.catalog.migrate runs them; no alembic.ini)."""
