"""Tools around a cluster, not needed to serve one: the load generator, a local cluster of
processes, the demo, and table rendering for ``fastractl``.
"""
