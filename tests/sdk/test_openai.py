"""The OpenAI-compatible API through the official `openai` Python SDK, as a client
application uses it: every field of issue 12 asserted on content, not only on status."""
import json

import httpx
import jsonschema
import openai
import pytest

MODEL = "SmolLM2-135M-Instruct.Q4_1"
MSG = [{"role": "user", "content": "Name three colors."}]


def chat(client, **kw):
    kw.setdefault("model", MODEL)
    kw.setdefault("messages", MSG)
    kw.setdefault("max_tokens", 16)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(**kw)


def test_models_and_basic_chat(client):
    ids = [m.id for m in client.models.list().data]
    assert ids, "no model listed"
    r = chat(client)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content.strip()
    assert r.usage.completion_tokens >= 1 and r.usage.prompt_tokens > 5


def test_stream_matches_whole_answer(client):
    whole = chat(client).choices[0].message.content
    parts = [c.choices[0].delta.content or "" for c in chat(client, stream=True) if c.choices]
    assert "".join(parts) == whole


def test_n_choices(client):
    r = chat(client, n=3, temperature=0.9, seed=7)
    assert len(r.choices) == 3
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    one = chat(client, max_tokens=8)
    three = chat(client, n=3, max_tokens=8)
    assert three.usage.prompt_tokens == one.usage.prompt_tokens, "the prompt counts once"
    assert three.usage.completion_tokens == 3 * one.usage.completion_tokens
    # streamed: every index gets its own finish
    finishes = {}
    for c in chat(client, n=2, stream=True, max_tokens=6):
        for ch in c.choices:
            if ch.finish_reason:
                finishes[ch.index] = ch.finish_reason
    assert set(finishes) == {0, 1}


def client_tokens(client, text):
    return httpx.post(str(client.base_url).replace("/v1/", "/tokenize"), json={"content": text}).json()["tokens"]


def test_logprobs(client):
    r = chat(client, logprobs=True, top_logprobs=2, max_tokens=6)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for t in content:
        assert t.logprob <= 0
        assert len(t.top_logprobs) == 2
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
        # greedy: the chosen token is the most likely one
        assert t.token == t.top_logprobs[0].token
    assert "".join(t.token for t in content) == r.choices[0].message.content
    streamed = [
        lp for c in chat(client, logprobs=True, top_logprobs=1, max_tokens=6, stream=True)
        if c.choices and c.choices[0].logprobs for lp in c.choices[0].logprobs.content
    ]
    assert [t.token for t in streamed] == [t.token for t in content]
    assert chat(client, max_tokens=4).choices[0].logprobs is None


def test_logit_bias_and_penalties(client):
    r = chat(client, logprobs=True, max_tokens=3)
    first = r.choices[0].logprobs.content[0].token
    first_id = client_tokens(client, first)
    assert len(first_id) == 1
    banned = chat(client, logprobs=True, max_tokens=3, logit_bias={str(first_id[0]): -100})
    assert banned.choices[0].logprobs.content[0].token != first
    long = dict(messages=[{"role": "user", "content": "Repeat the word cat many times."}], max_tokens=40)
    plain = chat(client, **long).choices[0].message.content
    penalized = chat(client, frequency_penalty=2.0, presence_penalty=2.0, **long).choices[0].message.content
    assert plain != penalized


def test_json_object(client):
    r = chat(client, response_format={"type": "json_object"}, max_tokens=60,
             messages=[{"role": "user", "content": "Give a JSON object describing a cat."}])
    text = r.choices[0].message.content
    assert text.lstrip().startswith("{"), text
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 30},
        "indoor": {"type": "boolean"},
    },
    "required": ["name", "age", "indoor"],
    "additionalProperties": False,
}


def test_json_schema(client):
    r = chat(client, max_tokens=80,
             messages=[{"role": "user", "content": "Describe Tom, a 3 year old indoor cat, as JSON."}],
             response_format={"type": "json_schema",
                              "json_schema": {"name": "cat", "schema": SCHEMA, "strict": True}})
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    value = json.loads(r.choices[0].message.content)
    jsonschema.validate(value, SCHEMA)


TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "maxLength": 30},
                                      "unit": {"enum": ["celsius", "fahrenheit"]}},
                       "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two numbers",
        "parameters": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                       "required": ["x", "y"], "additionalProperties": False}}},
]
WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_tool_choice_required(client):
    r = chat(client, messages=WEATHER, tools=TOOLS, tool_choice="required", max_tokens=60)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", c.message.content
    call = c.message.tool_calls[0]
    assert call.type == "function" and call.id
    tool = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), tool)


def test_tool_choice_named_and_streamed(client):
    named = {"type": "function", "function": {"name": "add"}}
    r = chat(client, messages=[{"role": "user", "content": "What is 2 plus 3?"}], tools=TOOLS,
             tool_choice=named, max_tokens=40)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "add"
    args = json.loads(call.function.arguments)
    assert set(args) == {"x", "y"}
    deltas = [d for c in chat(client, messages=[{"role": "user", "content": "What is 2 plus 3?"}],
                              tools=TOOLS, tool_choice=named, max_tokens=40, stream=True)
              if c.choices and c.choices[0].delta.tool_calls for d in c.choices[0].delta.tool_calls]
    assert deltas and deltas[0].function.name == "add"
    assert json.loads(deltas[0].function.arguments) == args


def test_tool_result_turn(client):
    turns = WEATHER + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"},
    ]
    r = chat(client, messages=turns, tools=TOOLS, tool_choice="none", max_tokens=24)
    assert r.choices[0].message.content.strip()
    assert r.choices[0].message.tool_calls is None


def test_roles_parts_and_usage_chunk(client):
    r = chat(client, messages=[
        {"role": "developer", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "text", "text": "Name a "}, {"type": "text", "text": "color."}]},
    ])
    assert r.choices[0].message.content.strip()
    chunks = list(chat(client, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert all(c.usage is None for c in chunks[:-1])


def test_seed_reproducible(client):
    a = chat(client, temperature=1.0, seed=42, max_tokens=12).choices[0].message.content
    b = chat(client, temperature=1.0, seed=42, max_tokens=12).choices[0].message.content
    assert a == b


def test_completions(client):
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert r.choices[0].text.strip() and r.object == "text_completion"
    echo = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6,
                                     temperature=0, echo=True)
    assert echo.choices[0].text == "The capital of France is" + r.choices[0].text
    lp = client.completions.create(model=MODEL, prompt="One, two,", max_tokens=4, temperature=0, logprobs=2)
    assert len(lp.choices[0].logprobs.tokens) == lp.usage.completion_tokens
    assert all(len(t) == 2 for t in lp.choices[0].logprobs.top_logprobs)
    many = client.completions.create(model=MODEL, prompt=["Hello", "Goodbye"], max_tokens=3, n=2, temperature=0)
    assert sorted(c.index for c in many.choices) == [0, 1, 2, 3]
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0, stream=True) if c.choices)
    assert streamed == r.choices[0].text


def test_tokenize_detokenize(base_url):
    toks = httpx.post(base_url + "/tokenize", json={"content": "Hello world"}).json()["tokens"]
    assert toks and all(isinstance(t, int) for t in toks)
    assert httpx.post(base_url + "/detokenize", json={"tokens": toks}).json()["content"] == "Hello world"
    pieces = httpx.post(base_url + "/tokenize", json={"content": "Hello", "with_pieces": True}).json()["tokens"]
    assert "".join(p["piece"] for p in pieces) == "Hello"
    assert httpx.post(base_url + "/detokenize", json={"tokens": [10**9]}).status_code == 400


@pytest.mark.parametrize("kw,needle", [
    (dict(n=99), "n must be at most"),
    (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "'nope'"),
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "strict": True,
                                                                 "schema": {"type": "object", "properties": {"a": {"type": "strng"}}}}}),
     "constraint"),
    (dict(extra_body={"audio": {"voice": "alloy"}}), "'audio'"),
    (dict(top_logprobs=3), "logprobs"),
])
def test_bad_requests_are_400(client, kw, needle):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, **kw)
    assert needle in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="x", suffix="y")
    assert "suffix" in str(e.value)
    assert chat(client, max_tokens=2).choices[0].message.content is not None, "the agent stays up"
