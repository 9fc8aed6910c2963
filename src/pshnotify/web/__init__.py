"""HTTP endpoints for completions (Standard Webhooks and xAPI), mounted by the daemon."""

from __future__ import annotations

from pshnotify.web.app import ProgramLoader, create_app, serve

__all__ = ["ProgramLoader", "create_app", "serve"]
