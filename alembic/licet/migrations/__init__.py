"""Licet's database migrations (Alembic scripts), SQLite and PostgreSQL alike; `licet migrate` runs them."""
