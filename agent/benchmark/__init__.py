"""The benchmark that compares layer-wise (``lw``), progressive (``prog``) and end-to-end (``e2e``) FedSSL.

Entry points: ``layerfed bench`` (through :func:`agent.benchmark.runner.add_arguments` and
:func:`agent.benchmark.runner.run`) and ``scripts/benchmark.py``. The output layout is described in this
package's ``README.md``.
"""
