"""Persistence: the SQLAlchemy models and sessions, and the segment store."""
