"""Watches: blocking queries that run a handler when the data they read changes.

plan.py (sans-IO) parses a watch definition and decides, answer by answer, when the handler
fires; client.py is the asyncio client of the agent's HTTP API; handlers.py runs scripts and
HTTP handlers; runner.py is the loop and the agent's `watches` subsystem. `cairn watch` is
appliance/cli/watch.py.
"""
