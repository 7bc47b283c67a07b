"""The round engine every device runs, and the commands built on it (demo, agent, contract deploy).

The engine talks to three ports (content store, ledger, message bus) and to the learning core; it never
imports an adapter. Commands wire adapters to it.
"""
