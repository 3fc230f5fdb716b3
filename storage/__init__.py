"""Persistence: SQLModel tables, engines, transactions and the error hierarchy."""
