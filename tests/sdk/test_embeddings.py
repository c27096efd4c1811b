"""`POST /v1/embeddings` through the official `openai` Python SDK: shapes, unit norms,
base64 equal to float, token-id input, and errors raised as the SDK's exceptions."""
import base64
import math
import struct

import httpx
import openai
import pytest

MODEL = "SmolLM2-135M-Instruct.Q4_1"
TEXTS = [
    "The lighthouse keeper watched the storm roll in.",
    "Quarterly revenue grew by twelve percent.",
    "A recipe for bread: flour, water, salt and yeast.",
]


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def embed(client, input, **kw):
    kw.setdefault("encoding_format", "float")
    return client.embeddings.create(model=MODEL, input=input, **kw)


def test_embeddings_lengths_norms_and_order(client):
    r = embed(client, TEXTS)
    assert r.object == "list"
    assert r.model == MODEL
    assert [d.index for d in r.data] == [0, 1, 2]
    width = len(r.data[0].embedding)
    assert width > 0
    for d in r.data:
        assert d.object == "embedding"
        assert len(d.embedding) == width
        assert abs(norm(d.embedding) - 1.0) < 1e-4
    assert r.data[0].embedding != r.data[1].embedding
    assert r.usage.prompt_tokens > 3 * 5 and r.usage.total_tokens == r.usage.prompt_tokens
    # Each input alone gives its vector in the batch; the same text twice the same one.
    for i, t in enumerate(TEXTS):
        assert embed(client, t).data[0].embedding == r.data[i].embedding
    # With the dimensions the model has: accepted.
    assert embed(client, TEXTS[0], dimensions=width).data[0].embedding == r.data[0].embedding


def test_embeddings_base64_equals_float(client, base_url):
    floats = embed(client, TEXTS[:2]).data
    # The SDK's default asks for base64 and decodes it itself.
    default = client.embeddings.create(model=MODEL, input=TEXTS[:2]).data
    assert [d.embedding for d in default] == [d.embedding for d in floats]
    # And the raw bytes: little-endian f32.
    raw = httpx.post(
        base_url + "/v1/embeddings",
        json={"model": MODEL, "input": TEXTS[0], "encoding_format": "base64"},
        timeout=120,
    ).json()
    b = base64.b64decode(raw["data"][0]["embedding"])
    assert list(struct.unpack("<%df" % (len(b) // 4), b)) == floats[0].embedding


def test_embeddings_token_ids_equal_text(client, base_url):
    text = embed(client, TEXTS[0])
    # The agent's own tokens of the text (BOS as the model wants, no special parsing).
    r = httpx.post(
        base_url + "/tokenize",
        json={"content": TEXTS[0], "add_special": True, "parse_special": False},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    tokens = r.json()["tokens"]
    assert len(tokens) == text.usage.prompt_tokens
    assert embed(client, tokens).data[0].embedding == text.data[0].embedding
    both = embed(client, [tokens, [1, 2, 3]]).data
    assert len(both) == 2 and both[0].embedding == text.data[0].embedding
    assert abs(norm(both[1].embedding) - 1.0) < 1e-4


@pytest.mark.parametrize(
    "kw",
    [
        {"input": []},
        {"input": [""]},
        {"input": "x", "dimensions": 7},
        {"input": "x", "model": "no-such-model"},
        {"input": ["x"] * 257},
    ],
)
def test_embeddings_bad_requests_raise(client, kw):
    kw.setdefault("model", MODEL)
    # An unknown model is OpenAI's 404 model_not_found; the rest are 400s.
    error = openai.NotFoundError if kw["model"] != MODEL else openai.BadRequestError
    with pytest.raises(error):
        client.embeddings.create(encoding_format="float", **kw)
    # The agent still answers.
    assert len(embed(client, "still there?").data) == 1
