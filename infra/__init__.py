"""Pulumi program for runbox on one Docker host: ``pulumi up`` from the repository root.

``__main__`` composes one :class:`pulumi.ComponentResource` per part (``network``, ``broker``,
``images``, ``gateway``, ``executor``, ``monitoring``); ``config`` reads the stack's settings once.
"""
