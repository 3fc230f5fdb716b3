"""The operator console: server-rendered pages for people (see routes.py)."""
