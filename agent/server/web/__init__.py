"""The web console: HTML pages served by the embedded control plane (see docs/web.md)."""

from agent.server.web.routes import web_routes

__all__ = ["web_routes"]
