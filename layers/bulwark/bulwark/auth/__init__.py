"""Identity checks for the authorizer: OAuth 2.0 / JWT access tokens and risk-adaptive scoring.

Import-light on purpose: the submodules (`jwt_verify`, `jwks`, `risk`) are imported where they are used, so loading
this package costs nothing on the API-key path.
"""
