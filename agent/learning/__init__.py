"""The learning core: what a client trains, what it exchanges, and how updates merge.

Nothing in this package knows about the network: the round engine calls a training backend
(:mod:`agent.learning.backends`; torch's is :func:`train_client`) and :func:`merge_updates` and moves
their bytes around.
"""
