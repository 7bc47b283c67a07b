"""Ports: the small interfaces the round engine talks to (content store, ledger, message bus)."""
