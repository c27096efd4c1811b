"""The official `ollama` Python client against the agent's Ollama API (/api/*)."""
import json

import ollama
import pytest
from pydantic import BaseModel

MODEL = "SmolLM2-135M-Instruct.Q4_1"
NAME = MODEL + ":latest"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "num_predict": 16}


@pytest.fixture(scope="module")
def oc(base_url):
    return ollama.Client(host=base_url, timeout=120)


def assert_done(r):
    assert r.done is True
    assert r.done_reason in ("stop", "length")
    assert r.prompt_eval_count > 0
    assert r.eval_count > 0
    assert r.total_duration > 0 and r.eval_duration is not None


def test_list_and_show(oc):
    models = oc.list().models
    assert [m.model for m in models] == [NAME]
    m = models[0]
    assert m.size > 0 and len(m.digest) == 64
    assert m.details.format == "gguf" and m.details.family == "llama"
    assert m.details.quantization_level == "Q4_1"

    s = oc.show(NAME)
    assert s.modelinfo["general.architecture"] == "llama"
    assert s.modelinfo["llama.context_length"] > 0
    assert s.template and s.details.parameter_size.endswith("M")
    # The bare id and the file name mean the same model.
    assert oc.show(MODEL).modelinfo == s.modelinfo
    assert oc.show(MODEL + ".gguf").template == s.template
    assert oc.ps().models[0].model == NAME


def test_chat(oc):
    r = oc.chat(model=NAME, messages=QUESTION, stream=False, options=GREEDY)
    assert_done(r)
    assert r.message.role == "assistant" and r.message.content
    assert r.eval_count <= 16

    parts = list(oc.chat(model=NAME, messages=QUESTION, stream=True, options=GREEDY))
    assert parts[-1].done and all(not p.done for p in parts[:-1])
    assert_done(parts[-1])
    assert "".join(p.message.content for p in parts) == r.message.content


def test_generate(oc):
    r = oc.generate(model=MODEL, prompt="Name a colour.", system="Answer briefly.", options=GREEDY)
    assert_done(r)
    assert isinstance(r.response, str) and r.response
    parts = list(oc.generate(model=MODEL, prompt="Name a colour.", system="Answer briefly.", options=GREEDY, stream=True))
    assert "".join(p.response for p in parts) == r.response
    # An empty prompt is the "load the model" call.
    assert oc.generate(model=MODEL).done_reason == "load"


def test_chat_format_json(oc):
    r = oc.chat(
        model=NAME,
        messages=[{"role": "user", "content": "Describe a cat as a JSON object with a name and an age."}],
        format="json",
        options={"temperature": 0, "num_predict": 64},
    )
    text = r.message.content
    if r.done_reason == "stop":
        assert isinstance(json.loads(text), dict)
    else:
        assert text.lstrip().startswith("{")


class Person(BaseModel):
    name: str
    age: int


def test_chat_format_schema(oc):
    r = oc.chat(
        model=NAME,
        messages=[{"role": "user", "content": "Invent a person. Answer in JSON with name and age."}],
        format=Person.model_json_schema(),
        options={"temperature": 0, "num_predict": 64},
    )
    if r.done_reason == "stop":
        p = Person.model_validate_json(r.message.content)
        assert p.name
    else:
        assert r.message.content.lstrip().startswith("{")


def test_seeded_sampling_repeats(oc):
    for options in ({"seed": 42, "temperature": 0, "num_predict": 16}, {"seed": 7, "temperature": 0.8, "num_predict": 16}):
        a = oc.chat(model=NAME, messages=QUESTION, options=options)
        b = oc.chat(model=NAME, messages=QUESTION, options=options)
        assert a.message.content == b.message.content, options


def test_errors(oc):
    with pytest.raises(ollama.ResponseError) as e:
        oc.chat(model="llama3", messages=QUESTION)
    assert e.value.status_code == 404 and "not found" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        oc.show("llama3")
    assert e.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as e:
        oc.chat(model=NAME, messages=QUESTION, options={"mirostat": 2})
    assert e.value.status_code == 400 and "mirostat" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        oc.generate(model=NAME, prompt="hi", suffix="bye")
    assert e.value.status_code == 400
    # Still serving.
    assert oc.chat(model=NAME, messages=QUESTION, options=GREEDY).done
