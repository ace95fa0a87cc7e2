"""Bulwark: a serverless protection layer for AI model APIs (the domain code shared by every function)."""
