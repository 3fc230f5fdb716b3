"""The application shell: settings, CLI (and later the HTTP API)."""
