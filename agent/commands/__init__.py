"""Commands: where adapters are chosen and wired to the round engine (demo, agent, contract deploy).

This is the only layer besides tests that imports both the engine and the adapters.
"""
