"""What well-known clients send, answered as OpenAI answers it: malformed bodies are 400
(never 422), a tool call cut by max_tokens is still a tool call, JSON schemas without
additionalProperties close their objects, llama-server's json_object schema is honoured,
an unknown model is 404 model_not_found, system_fingerprint is sent, and the Responses
API (`client.responses.create`, plain and streamed, tools, text.format and
previous_response_id) works. Run through one agent and through a 3-agent cluster."""
import json

import httpx
import jsonschema
import openai
import pytest

from test_openai import MODEL, TOOLS, WEATHER, chat

MALFORMED = [
    {"model": MODEL, "messages": None},
    {"model": MODEL, "messages": "hi"},
    {"model": MODEL, "messages": [123]},
    {"model": MODEL, "messages": [{}]},
    {"model": MODEL, "messages": [{"role": 5, "content": "hi"}]},
    {"model": MODEL, "messages": [{"role": "user", "content": 5}]},
    {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
]


@pytest.mark.parametrize("body", MALFORMED, ids=[json.dumps(b["messages"])[:30] for b in MALFORMED])
def test_malformed_bodies_are_400_with_the_field(base_url, client, body):
    r = httpx.post(base_url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert "messages" in err["message"], err["message"]
    # The SDK raises what users catch.
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(**body)


def test_raw_body_errors_are_400(base_url):
    for raw in [b"", b"{", b"[]", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}']:
        r = httpx.post(base_url + "/v1/chat/completions", content=raw,
                       headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == 400, (raw, r.text)
    r = httpx.post(base_url + "/v1/completions", content=b'{"prompt": 5.5}', timeout=60)
    assert r.status_code == 400, r.text
    r = httpx.post(base_url + "/v1/embeddings", content=b'{"input": {}}', timeout=60)
    assert r.status_code == 400, r.text


def test_forced_tool_call_cut_by_max_tokens_is_a_tool_call(client):
    r = chat(client, messages=WEATHER, tools=TOOLS, tool_choice="required", max_tokens=6)
    c = r.choices[0]
    assert c.finish_reason == "length"
    assert c.message.content is None, f"markup leaked as content: {c.message.content!r}"
    assert c.message.tool_calls and c.message.tool_calls[0].type == "function"
    assert "<tool_call>" not in (c.message.tool_calls[0].function.arguments or "")
    # streamed: no content deltas with markup, the call in tool_calls, finish "length"
    content, calls, finish = "", [], None
    for chunk in chat(client, messages=WEATHER, tools=TOOLS, tool_choice="required",
                      max_tokens=6, stream=True):
        for ch in chunk.choices:
            content += ch.delta.content or ""
            calls += ch.delta.tool_calls or []
            finish = ch.finish_reason or finish
    assert "<tool" not in content and not content.strip()
    assert calls and finish == "length"


PERSON = {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
          "required": ["name", "age"]}


def test_json_schema_without_additional_properties_closes_objects(client):
    for seed in (1, 2, 3):
        r = chat(client, max_tokens=60, temperature=0.8, seed=seed,
                 messages=[{"role": "user", "content": "Make up a person as JSON."}],
                 response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}})
        c = r.choices[0]
        assert c.finish_reason == "stop", c.message.content
        value = json.loads(c.message.content)
        assert set(value) == {"name", "age"}, value
        jsonschema.validate(value, PERSON)


def test_json_object_with_schema_is_honoured(client, base_url):
    r = chat(client, max_tokens=60, messages=[{"role": "user", "content": "Make up a person as JSON."}],
             response_format={"type": "json_object", "schema": PERSON})
    value = json.loads(r.choices[0].message.content)
    assert set(value) == {"name", "age"}, value
    bad = httpx.post(base_url + "/v1/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_object", "schema": 123}})
    assert bad.status_code == 400 and "schema" in bad.json()["error"]["message"]


def test_unknown_model_is_404_model_not_found(client, base_url):
    with pytest.raises(openai.NotFoundError) as e:
        chat(client, model="gpt-4o")
    assert e.value.code == "model_not_found"
    r = httpx.post(base_url + "/v1/completions", json={"model": "gpt-4o", "prompt": "x"}, timeout=60)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_system_fingerprint(client):
    r = chat(client, max_tokens=2)
    assert r.system_fingerprint and r.system_fingerprint.startswith("dllm-")
    chunks = list(chat(client, max_tokens=2, stream=True))
    assert all(c.system_fingerprint == r.system_fingerprint for c in chunks)


def test_responses_plain_and_streamed(client):
    r = client.responses.create(model=MODEL, input="Name three colors.", max_output_tokens=16,
                                temperature=0, instructions="Answer briefly.")
    assert r.object == "response" and r.status in ("completed", "incomplete")
    assert r.output_text.strip()
    assert r.usage.input_tokens > 5 and r.usage.output_tokens >= 1
    whole = chat(client, max_tokens=16, messages=[{"role": "system", "content": "Answer briefly."},
                                                   {"role": "user", "content": "Name three colors."}])
    assert r.output_text == whole.choices[0].message.content, "same model, same greedy answer"

    kinds, text, final = [], "", None
    for ev in client.responses.create(model=MODEL, input="Name three colors.", max_output_tokens=16,
                                      temperature=0, instructions="Answer briefly.", stream=True):
        kinds.append(ev.type)
        if ev.type == "response.output_text.delta":
            text += ev.delta
        if ev.type in ("response.completed", "response.incomplete"):
            final = ev.response
    assert kinds[0] == "response.created"
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert "response.output_item.added" in kinds and "response.output_text.done" in kinds
    assert text == r.output_text == final.output_text
    raw = list(client.responses.create(model=MODEL, input="Hi", max_output_tokens=4, stream=True))
    assert [e.sequence_number for e in raw] == list(range(len(raw)))


def test_responses_tools_format_and_follow_up(client):
    tools = [{"type": "function", "name": t["function"]["name"], "description": t["function"]["description"],
              "parameters": t["function"]["parameters"]} for t in TOOLS]
    r = client.responses.create(model=MODEL, input="What is the weather in Paris?", tools=tools,
                                tool_choice="required", max_output_tokens=60, temperature=0)
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls, r.output
    params = {t["name"]: t["parameters"] for t in tools}[calls[0].name]
    jsonschema.validate(json.loads(calls[0].arguments), params)
    # the tool's result as a follow-up turn of the stored conversation
    r2 = client.responses.create(model=MODEL, previous_response_id=r.id, max_output_tokens=20,
                                 temperature=0, input=[{"type": "function_call_output",
                                                        "call_id": calls[0].call_id,
                                                        "output": "18 degrees and sunny"}])
    assert r2.previous_response_id == r.id and r2.output_text.strip()
    assert client.responses.retrieve(r2.id).id == r2.id
    # text.format json_schema
    r3 = client.responses.create(model=MODEL, input="Make up a person as JSON.", max_output_tokens=60,
                                 temperature=0, text={"format": {"type": "json_schema", "name": "p",
                                                                 "schema": PERSON, "strict": True}})
    value = json.loads(r3.output_text)
    assert set(value) == {"name", "age"}
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="x", previous_response_id="resp_nope")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input="x", tools=[{"type": "web_search"}])
