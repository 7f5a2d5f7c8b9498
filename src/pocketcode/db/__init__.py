"""Database layer: engine, tables and migrations (SQLite and PostgreSQL)."""
