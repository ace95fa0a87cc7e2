"""The demo model `bulwark local` starts (bulwark_dev.local.demo_model): an OpenAI-compatible echo server on loopback.

It is the OpenAI-compatible adapter with no API key, named separately so a policy never mistakes it for a real model.
"""

from __future__ import annotations

import os

from bulwark.policy import UpstreamConfig
from bulwark.upstreams.guard import Guard
from bulwark.upstreams.openai_http import OpenAIHttpUpstream
from bulwark.upstreams.secrets import ApiKeyProvider
from bulwark.upstreams.transport import HttpTransport

DEMO_MODEL_ID = "demo-echo"
DEMO_DEFAULT_URL = "http://127.0.0.1:3001/v1"
# `bulwark local` and tests start the demo model on a free port and say where with this variable.
DEMO_URL_ENV = "BULWARK_DEMO_MODEL_URL"


class DemoUpstream(OpenAIHttpUpstream):
    def __init__(
        self, name: str, cfg: UpstreamConfig, *, guard: Guard, transport: HttpTransport, keys: ApiKeyProvider
    ) -> None:
        cfg = cfg.model_copy(
            update={
                "url": os.environ.get(DEMO_URL_ENV) or cfg.url or DEMO_DEFAULT_URL,
                "model_id": cfg.model_id or DEMO_MODEL_ID,
                "api_key_secret": None,
                "api_key_env": None,
            }
        )
        super().__init__(name, cfg, guard=guard, transport=transport, keys=keys)
