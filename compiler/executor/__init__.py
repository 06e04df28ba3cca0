"""Executor: make a compiled plan real on this machine: fetch, verify, cache, lock (and load).

It reads out/<host>/models.json, never the catalog sources: the compiler decides, the executor
carries out. Every path it writes is derived from validated names inside the cache folder.
"""
