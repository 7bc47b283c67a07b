"""Client-level differential privacy of the exchanged updates (DP-FedAvg done on each device).

Nobody aggregates centrally, and every update is pinned to a content store and announced to every peer,
so each device protects its own update before it leaves the device: :mod:`~agent.learning.privacy.
mechanism` clips the exchanged delta to an L2 bound and adds Gaussian noise from a seeded, device-private
generator; :mod:`~agent.learning.privacy.accountant` (the one module that imports Opacus) says what that
costs in epsilon over a schedule; :mod:`~agent.learning.privacy.config` is the recipe's part of it.

The package itself imports nothing, so that the command line can read the settings without torch.
"""
