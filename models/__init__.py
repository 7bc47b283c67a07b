"""Encoders split into stages, SimCLR projection heads, augmentations and deterministic initialisation.

Nothing here knows about federation or the network: a model is built from an :class:`EncoderSpec`.
"""
