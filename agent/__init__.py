"""layerfed's agent: the learning core, the round engine, the network ports and adapters, and the CLI.

Dependencies point one way: ``agent.cli`` -> ``agent.commands`` -> ``agent.engine`` -> {``agent.learning``,
``agent.data``, ``agent.ports``}; adapters in ``agent.adapters`` import only ports, data types and errors,
and only they import network and signing libraries (``tests/test_architecture.py`` keeps it so).
"""

__version__ = "0.1.0"
