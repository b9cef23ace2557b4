"""The running service: its composition root, its collection job and its data directory.

``main`` builds every component from the config and owns their lifecycle (``serve``,
``demo``); ``jobs`` is collection as one service (the daemon's loop, and the commands that
collect); ``bootstrap`` creates the data directory it runs on (``init``, ``demo``). Nothing
is imported here, so a command may use one of them without loading the whole daemon.
"""
