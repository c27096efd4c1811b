//! Chat templates of each model family render exactly as Python's jinja2 renders them the
//! way Hugging Face (and llama.cpp) do: `tests/templates/expected.json`, written by
//! `scripts/render-templates.py` from the public templates in `tests/templates/*.jinja`.

use engine::chat::RenderOptions;
use engine::{ChatMessage, ChatTemplate};
use serde_json::{json, Value};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/templates")
}

fn template(name: &str, bos: &str, eos: &str) -> ChatTemplate {
    let path = dir().join(format!("{name}.jinja"));
    let source =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ChatTemplate::new(&source, bos.into(), eos.into()).unwrap()
}

#[test]
fn every_family_renders_like_jinja2() {
    let path = dir().join("expected.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/render-templates.py)", path.display()));
    let expected: Value = serde_json::from_str(&text).unwrap();
    let now = expected["now_unix"].as_i64().unwrap();
    let renders = expected["renders"].as_array().unwrap();
    let mut failures = Vec::new();
    for r in renders {
        let name = r["template"].as_str().unwrap();
        let case = r["case"].as_str().unwrap();
        let t = template(
            name,
            r["bos_token"].as_str().unwrap(),
            r["eos_token"].as_str().unwrap(),
        );
        t.set_now(Some(now));
        let messages: Vec<ChatMessage> = r["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage::from_json(m.clone()).unwrap())
            .collect();
        let opts = RenderOptions {
            add_generation_prompt: r["add_generation_prompt"].as_bool().unwrap(),
            tools: Some(r["tools"].clone()).filter(|t| !t.is_null()),
            vars: r["vars"].as_object().cloned().unwrap_or_default(),
        };
        let got = t.render_with(&messages, &opts);
        match (&got, r.get("output"), r.get("error")) {
            (Ok(out), Some(want), _) if out == want.as_str().unwrap() => {}
            (Err(e), None, Some(want)) if e.to_string().contains(want.as_str().unwrap()) => {}
            _ => failures.push(format!(
                "{name}/{case}:\n--- want ---\n{}\n--- got ---\n{}",
                r.get("output")
                    .or(r.get("error"))
                    .unwrap()
                    .as_str()
                    .unwrap(),
                match &got {
                    Ok(s) => s.clone(),
                    Err(e) => format!("error: {e}"),
                }
            )),
        }
    }
    println!(
        "{} of {} renders identical to jinja2",
        renders.len() - failures.len(),
        renders.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn plain_messages_still_render() {
    let t = template("smollm2", "<|im_start|>", "<|im_end|>");
    let out = t.render(&[ChatMessage::new("user", "Hi")], true).unwrap();
    assert!(
        out.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        "{out}"
    );
}

#[test]
fn template_errors_are_clear() {
    let gemma = template("gemma2", "<bos>", "<eos>");
    let err = gemma
        .render(
            &[
                ChatMessage::new("system", "x"),
                ChatMessage::new("user", "y"),
            ],
            true,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refused the conversation: System role not supported"),
        "{err}"
    );
    let err = ChatTemplate::new("{% for %}", String::new(), String::new())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("does not compile"), "{err}");
    let err = ChatTemplate::new(
        "{{ messages[0].content.nope() }}",
        String::new(),
        String::new(),
    )
    .unwrap()
    .render(&[ChatMessage::new("user", "a")], true)
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn tojson_spacing_matches_python() {
    let t = ChatTemplate::new(
        "{{ tools | tojson }}|{{ tools[0] | tojson(indent=2) }}|{{ 'é<>' | tojson }}|{{ 'é' | tojson(ensure_ascii=True) }}",
        String::new(),
        String::new(),
    )
    .unwrap();
    let opts = RenderOptions {
        tools: Some(json!([{"a": [1, 2.5, null, true], "b": {}}])),
        ..Default::default()
    };
    let out = t
        .render_with(&[ChatMessage::new("user", "x")], &opts)
        .unwrap();
    assert_eq!(
        out,
        "[{\"a\": [1, 2.5, null, true], \"b\": {}}]|{\n  \"a\": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n  \"b\": {}\n}|\"é<>\"|\"\\u00e9\""
    );
}

#[test]
fn messages_carry_tool_calls_as_json() {
    let m = ChatMessage::from_json(json!({"role": "assistant", "content": null,
        "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]}))
    .unwrap();
    assert_eq!(m.role, "assistant");
    assert_eq!(m.to_json()["content"], Value::Null);
    let t = ChatTemplate::new(
        "{% for m in messages %}{{ m.content is none }} {{ m.tool_calls[0].function.arguments | tojson }}{% endfor %}",
        String::new(),
        String::new(),
    )
    .unwrap();
    assert_eq!(t.render(&[m], false).unwrap(), "True {\"x\": 1}");
    let m = ChatMessage::new("tool", "42").with("tool_call_id", json!("c1"));
    assert_eq!(m.to_json()["tool_call_id"], "c1");
}
