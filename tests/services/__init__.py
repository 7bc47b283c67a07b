"""Pytest fixtures that start real services (mosquitto, anvil, a js-ipfs node) on 127.0.0.1.

A missing service binary is a test failure, never a skip: ``.ci/run`` installs every one of them.
"""
