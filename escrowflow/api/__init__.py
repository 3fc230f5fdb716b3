"""The HTTP API, a router per concern: `writes`, `reads`, `webhooks`, `ops`; `deps` holds
what they depend on and `app` builds the app (`create_app`)."""

from escrowflow.api.app import create_app

__all__ = ["create_app"]
