"""Adapters: one module per technology (IPFS, Ethereum, MQTT), each implementing a port in agent.ports."""
