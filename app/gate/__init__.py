"""The Docker API gate: the only process that holds the engine's socket.

The engine's socket is root on the host, so whoever took an executor holding it would own
the machine. The gate (``RUNBOX_ROLES=gate``, or ``python -m app gate``) holds it instead and
serves the executor's Docker SDK a subset of the Engine API on a socket of its own
(``RUNBOX_GATE_SOCKET``, ``RUNBOX_GATE_TCP``): create a container only with a sandbox's whole
configuration (:mod:`app.gate.policy`), and start, attach, wait, kill, inspect, list and remove
only sandboxes. Everything else is a ``403`` with a JSON message, counted in
``runbox_gate_refusals_total``. :mod:`app.gate.proxy` is the server.
"""
