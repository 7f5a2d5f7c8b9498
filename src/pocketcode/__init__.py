"""pocketcode: drive Claude Code sessions on your own machine from a phone or browser."""

from __future__ import annotations

__version__ = "0.1.0"
