#!/usr/bin/env python3
"""Reference renders of the chat-template fixtures (crates/engine/tests/templates/*.jinja).

Renders every template on a set of conversations with Python's jinja2, configured the way
Hugging Face transformers renders chat templates (and llama.cpp mirrors): trim_blocks,
lstrip_blocks, loop controls, `raise_exception`, `strftime_now`, `tojson` = json.dumps.
Writes crates/engine/tests/templates/expected.json, which crates/engine/tests/templates.rs
compares minijinja's renders with. Object keys are sorted before rendering because the
engine's JSON values (serde_json without preserve_order) are sorted too.

Usage: scripts/render-templates.py   (needs jinja2: `pip install jinja2`, or the venv of
scripts/llama-cpp.sh: "$PY" scripts/render-templates.py)
"""
import json
import os
import sys
from datetime import datetime, timezone

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
DIR = os.path.join(HERE, "..", "crates", "engine", "tests", "templates")
NOW = datetime(2024, 7, 26, 12, 0, 0, tzinfo=timezone.utc)  # the tests fix the same clock

TOKENS = {  # template -> (bos_token, eos_token)
    "llama3.1": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3.2": ("<|begin_of_text|>", "<|eot_id|>"),
    "qwen2.5": ("<|endoftext|>", "<|im_end|>"),
    "qwen3": ("<|endoftext|>", "<|im_end|>"),
    "gemma2": ("<bos>", "<eos>"),
    "gemma3": ("<bos>", "<eos>"),
    "phi3.5": ("<s>", "<|endoftext|>"),
    "mistral-nemo": ("<s>", "</s>"),
    "smollm2": ("<|im_start|>", "<|im_end|>"),
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
CALL = {"id": "call00001", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}

CASES = {
    "hello": dict(messages=[{"role": "user", "content": "Hello!"}]),
    "chat": dict(messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ]),
    "no-generation-prompt": dict(add_generation_prompt=False, messages=[
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
    ]),
    "tools": dict(tools=[WEATHER], messages=[
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": "{\"temperature\": 21}", "tool_call_id": "call00001",
         "name": "get_weather"},
    ]),
    "tools-first-turn": dict(tools=[WEATHER], messages=[
        {"role": "system", "content": "Use tools when useful."},
        {"role": "user", "content": "Weather in Oslo?"},
    ]),
    "thinking": dict(messages=[
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\n4"},
        {"role": "user", "content": "3+3?"},
    ]),
    "no-thinking": dict(vars={"enable_thinking": False}, messages=[
        {"role": "user", "content": "3+3?"},
    ]),
    "bad-alternation": dict(messages=[
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
    ]),
    "unicode": dict(messages=[
        {"role": "user", "content": "Café ☕ 日本語 🦙\n  indented\tand tabbed  "},
    ]),
}


def sort_keys(x):
    if isinstance(x, dict):
        return {k: sort_keys(x[k]) for k in sorted(x)}
    if isinstance(x, list):
        return [sort_keys(v) for v in x]
    return x


def environment():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: NOW.strftime(fmt)
    return env


def main():
    env = environment()
    out = []
    for name, (bos, eos) in TOKENS.items():
        with open(os.path.join(DIR, name + ".jinja"), encoding="utf-8") as f:
            tmpl = env.from_string(f.read())
        for case, spec in CASES.items():
            ctx = dict(messages=sort_keys(spec["messages"]), bos_token=bos, eos_token=eos,
                       add_generation_prompt=spec.get("add_generation_prompt", True),
                       **spec.get("vars", {}))
            if "tools" in spec:
                ctx["tools"] = sort_keys(spec["tools"])
            entry = dict(template=name, case=case, bos_token=bos, eos_token=eos,
                         add_generation_prompt=ctx["add_generation_prompt"],
                         messages=spec["messages"], tools=spec.get("tools"),
                         vars=spec.get("vars", {}))
            try:
                entry["output"] = tmpl.render(**ctx)
            except jinja2.exceptions.TemplateError as e:
                entry["error"] = str(e)
            out.append(entry)
    path = os.path.join(DIR, "expected.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dict(now_unix=int(NOW.timestamp()), renders=out), f, ensure_ascii=False,
                  indent=1)
        f.write("\n")
    errors = sum("error" in e for e in out)
    print(f"{path}: {len(out)} renders ({errors} raised by the template)", file=sys.stderr)


if __name__ == "__main__":
    main()
