"""layerfed's agent: the learning core, the round engine, the network ports and adapters, and the CLI.

Dependencies point one way: ``agent.cli`` -> ``agent.engine`` -> {``agent.learning``, ``agent.data``,
``agent.ports``}; adapters in ``agent.adapters`` import only ports, data types and errors.
"""

__version__ = "0.1.0"
