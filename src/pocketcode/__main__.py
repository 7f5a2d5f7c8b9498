from __future__ import annotations

from pocketcode.cli import main

main()
