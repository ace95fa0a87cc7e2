"""Streaming output: SSE framing of what the client receives, output filtering, and the on-the-fly stream relay."""
