"""Local servers that speak the real wire protocols of Bulwark's upstreams, for integration tests.

Each is a loopback HTTP/1.1 server with a default answer per route and a script of one-off replies (faults, delays,
dropped connections) consumed in order. boto3 is pointed at them by `endpoint_url`, so serialization, signing and
response parsing are botocore's real ones.
"""
