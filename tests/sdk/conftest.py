"""Shared fixtures of the SDK tests: the agent's URL and an OpenAI client for it."""
import os

import pytest


@pytest.fixture(scope="session")
def base_url() -> str:
    return os.environ.get("DLLM_URL", "http://127.0.0.1:8080")


@pytest.fixture(scope="session")
def agents() -> int:
    return int(os.environ.get("DLLM_AGENTS", "1"))


@pytest.fixture(scope="session")
def client(base_url):
    import openai

    return openai.OpenAI(base_url=base_url + "/v1", api_key="none", timeout=120, max_retries=0)
