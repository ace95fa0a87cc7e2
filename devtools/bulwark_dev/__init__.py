"""Bulwark for people and tests: the CLI, the local stack (emulator and demo model) and operator tools.

Never shipped in the Lambda layer: nothing a function imports lives here.
"""
