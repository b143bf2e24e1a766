"""Storage: SQLAlchemy models, stores and Alembic migrations."""
