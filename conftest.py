"""Repository-level pytest configuration: without torch, skip the doctests of the torch adapter."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("torch") is not None else ["nmsolve/torch/*"]
