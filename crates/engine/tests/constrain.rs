//! Constrained decoding on the default model: greedy generation under a constraint gives
//! text that follows it; bad constraints fail with a message; a matcher rebuilt from the
//! generated tokens gives the same masks; the mask costs little next to a decode step.
//!
//! JSON output is checked with `serde_json` and a small schema checker below (the
//! keywords the test schemas use: type, properties, required, additionalProperties,
//! enum, const, items, minItems, maxItems, minimum, maximum, anyOf).

mod common;

use engine::constrain::{Constraint, Matcher, TokenEnv, ToolMode};
use engine::{ChatMessage, Generator, Sampler, SamplingParams, StageInput, StageOutput};
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Model {
    g: Generator,
    env: TokenEnv,
}

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let g = Generator::load(&common::model(), 1).unwrap();
        let t0 = Instant::now();
        let env = TokenEnv::new(&g.tokenizer).unwrap();
        eprintln!(
            "TokenEnv::new: {:.0} ms for {} tokens (end of generation: {:?})",
            t0.elapsed().as_secs_f64() * 1e3,
            env.vocab_size(),
            env.eog()
        );
        Model { g, env }
    })
}

/// A greedy run under a constraint: its tokens (without the final end of generation),
/// their text, the mask of every step, and timings.
struct Run {
    tokens: Vec<u32>,
    text: String,
    ended: bool,
    masks: Vec<Vec<u32>>,
    mask_time: Vec<Duration>,
    accept_time: Vec<Duration>,
    step_time: Vec<Duration>,
}

fn generate(system: Option<&str>, user: &str, c: &Constraint, max: usize) -> Run {
    let m = model();
    let mut msgs = Vec::new();
    if let Some(s) = system {
        msgs.push(ChatMessage::new("system", s));
    }
    msgs.push(ChatMessage::new("user", user));
    let prompt = m.g.chat_tokens(&msgs).unwrap();
    let stage = &m.g.stages[0];
    let mut cache = stage.new_cache();
    let sampler = Sampler::new(&SamplingParams::greedy(max));
    let mut matcher = Matcher::new(&m.env, c).unwrap();
    let mut history = prompt.clone();
    let mut input = prompt;
    let mut run = Run {
        tokens: Vec::new(),
        text: String::new(),
        ended: false,
        masks: Vec::new(),
        mask_time: Vec::new(),
        accept_time: Vec::new(),
        step_time: Vec::new(),
    };
    for _ in 0..max {
        let t0 = Instant::now();
        let mut logits = match stage
            .forward(StageInput::Tokens(input), &mut cache)
            .unwrap()
        {
            StageOutput::Logits(l) => l,
            StageOutput::Hidden(_) => unreachable!(),
        };
        run.step_time.push(t0.elapsed());
        let t0 = Instant::now();
        let mask = matcher.allowed();
        run.mask_time.push(t0.elapsed());
        run.masks.push(mask.to_vec());
        let tok = sampler.pick(&mut logits, &history, Some(mask)).token;
        assert!(
            run.masks.last().unwrap()[tok as usize / 32] >> (tok % 32) & 1 == 1,
            "sampled a token outside the mask"
        );
        let t0 = Instant::now();
        matcher.accept(tok).unwrap();
        run.accept_time.push(t0.elapsed());
        if m.env.eog().contains(&tok) {
            assert!(matcher.is_done());
            run.ended = true;
            break;
        }
        run.tokens.push(tok);
        history.push(tok);
        input = vec![tok];
    }
    run.text = m.g.tokenizer.decode(&run.tokens).unwrap();
    run
}

/// Errors of `v` against `schema` (empty: valid), for the keywords listed above.
fn check(v: &Value, schema: &Value, at: &str, errs: &mut Vec<String>) {
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        if !any.iter().any(|s| {
            let mut e = Vec::new();
            check(v, s, at, &mut e);
            e.is_empty()
        }) {
            errs.push(format!("{at}: matches no anyOf branch"));
        }
    }
    if let Some(c) = schema.get("const") {
        if v != c {
            errs.push(format!("{at}: {v} is not {c}"));
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errs.push(format!("{at}: {v} not in {e:?}"));
        }
    }
    let ok = match schema.get("type").and_then(Value::as_str) {
        None => true,
        Some("object") => v.is_object(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some("array") => v.is_array(),
        Some("null") => v.is_null(),
        Some(t) => panic!("checker does not know type {t}"),
    };
    if !ok {
        errs.push(format!("{at}: {v} is not of type {}", schema["type"]));
        return;
    }
    if let Some(n) = v.as_f64() {
        if schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            errs.push(format!("{at}: {n} below minimum"));
        }
        if schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            errs.push(format!("{at}: {n} above maximum"));
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !obj.contains_key(r.as_str().unwrap()) {
                errs.push(format!("{at}: missing required {r}"));
            }
        }
        for (k, x) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(x, s, &format!("{at}.{k}"), errs),
                None if schema.get("additionalProperties") == Some(&json!(false)) => {
                    errs.push(format!("{at}: unexpected property {k}"))
                }
                None => {}
            }
        }
    }
    if let Some(arr) = v.as_array() {
        let len = arr.len() as u64;
        if schema
            .get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| len < m)
        {
            errs.push(format!("{at}: fewer than minItems"));
        }
        if schema
            .get("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| len > m)
        {
            errs.push(format!("{at}: more than maxItems"));
        }
        if let Some(items) = schema.get("items") {
            for (i, x) in arr.iter().enumerate() {
                check(x, items, &format!("{at}[{i}]"), errs);
            }
        }
    }
}

fn validate(v: &Value, schema: &Value) {
    let mut errs = Vec::new();
    check(v, schema, "$", &mut errs);
    assert!(errs.is_empty(), "{v} does not match the schema: {errs:?}");
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "role": {"enum": ["engineer", "artist", "doctor", "teacher"]},
            "skills": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3}
        },
        "required": ["name", "age", "role", "skills"],
        "additionalProperties": false
    })
}

fn stats(name: &str, t: &[Duration]) -> f64 {
    let us: Vec<f64> = t.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    let mean = us.iter().sum::<f64>() / us.len() as f64;
    let mut sorted = us.clone();
    sorted.sort_by(f64::total_cmp);
    eprintln!(
        "{name}: {} tokens, mean {mean:.1} us, median {:.1} us, max {:.1} us",
        us.len(),
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );
    mean
}

#[test]
fn json_object_generation_parses() {
    let run = generate(
        None,
        "Describe a cat named Tom who is 3 years old as JSON.",
        &Constraint::JsonObject,
        120,
    );
    eprintln!("json_object: {}", run.text);
    // Every token was accepted by the matcher (`generate` asserts it). A 135M model
    // under greedy decoding may loop inside a string; what it wrote is still JSON so far.
    assert!(run.text.starts_with('{'), "{}", run.text);
    if run.ended {
        let v: Value = serde_json::from_str(&run.text).expect("valid JSON");
        assert!(v.is_object());
    }
}

#[test]
fn json_schema_generation_validates_and_masks_are_cheap() {
    let schema = person_schema();
    let c = Constraint::JsonSchema {
        schema: schema.clone(),
        strict: true,
    };
    let run = generate(
        Some("You answer in JSON."),
        "Invent a person: name, age, role and up to three skills.",
        &c,
        160,
    );
    eprintln!("json_schema: {}", run.text);
    assert!(run.ended, "did not finish: {}", run.text);
    let v: Value = serde_json::from_str(&run.text).expect("valid JSON");
    validate(&v, &schema);

    let mask = stats("mask (allowed)", &run.mask_time);
    let accept = stats("accept", &run.accept_time);
    let step = stats("forward step (135M, 1 token)", &run.step_time[1..]);
    eprintln!(
        "constraint cost per token: {:.1} us = {:.1}% of a decode step",
        mask + accept,
        100.0 * (mask + accept) / step
    );
    // generous bound for a shared 2-core machine; llguidance is ~tens of us per token
    assert!(
        mask + accept < 0.5 * step,
        "the constraint costs {:.0} us per token, a decode step {step:.0} us",
        mask + accept
    );
}

#[test]
fn replay_gives_the_same_masks() {
    let c = Constraint::JsonSchema {
        schema: person_schema(),
        strict: false,
    };
    let run = generate(None, "Invent a person as JSON.", &c, 80);
    let env = &model().env;
    // a matcher rebuilt at every step from the tokens so far masks as the original did
    for k in 0..run.masks.len() {
        let mut m = Matcher::replay(env, &c, &run.tokens[..k.min(run.tokens.len())]).unwrap();
        assert_eq!(
            m.allowed(),
            &run.masks[k][..],
            "mask {k} differs after replay"
        );
        assert_eq!(m.accepted(), k.min(run.tokens.len()));
    }
}

#[test]
fn regex_generation_matches() {
    let c = Constraint::Regex("(Paris|London|Berlin|Madrid)\\.".into());
    let run = generate(None, "What is the capital of France?", &c, 20);
    eprintln!("regex: {}", run.text);
    assert!(run.ended);
    assert!(
        ["Paris.", "London.", "Berlin.", "Madrid."].contains(&run.text.as_str()),
        "{}",
        run.text
    );

    let c = Constraint::Regex("[0-9]{3}-[0-9]{4}".into());
    let run = generate(None, "Make up a phone number.", &c, 20);
    eprintln!("regex: {}", run.text);
    let b = run.text.as_bytes();
    assert!(run.ended && b.len() == 8 && b[3] == b'-', "{}", run.text);
    assert!(b
        .iter()
        .enumerate()
        .all(|(i, c)| i == 3 || c.is_ascii_digit()));
}

#[test]
fn bad_constraints_fail_with_a_message() {
    let env = &model().env;
    let cases = [
        (
            Constraint::JsonSchema {
                schema: json!({"type": "object", "properties": {"a": {"type": "nonsense"}}}),
                strict: true,
            },
            "JSON schema",
        ),
        (
            Constraint::JsonSchema {
                schema: json!({"type": "string", "format": "no-such-format"}),
                strict: true,
            },
            "no-such-format",
        ),
        (
            Constraint::JsonSchema {
                schema: json!({"type": "integer", "minimum": 5, "maximum": 1}),
                strict: true,
            },
            "JSON schema",
        ),
        (Constraint::Regex("(unclosed".into()), "regular expression"),
        (Constraint::Lark("start: undefined_rule".into()), "grammar"),
    ];
    for (c, want) in cases {
        let e = Matcher::new(env, &c).expect_err(&format!("{c:?} should not compile"));
        eprintln!("{c:?}\n  -> {e}");
        assert!(e.contains(want), "{e}");
        assert!(e.len() < 1100);
    }
    // not strict: keywords llguidance does not implement are ignored
    let lenient = Constraint::JsonSchema {
        schema: json!({"type": "string", "format": "no-such-format"}),
        strict: false,
    };
    assert!(Matcher::new(env, &lenient).is_ok());
}

/// Tool calls as a grammar (one call, as llama-server's default `parallel_tool_calls:
/// false`): free text, or `<tool_call>` + JSON for one of the tools + `</tool_call>`.
fn tool_grammar(tools: &[(&str, Value)], required: bool) -> String {
    let tools: Vec<(String, Value)> = tools
        .iter()
        .map(|(n, p)| (n.to_string(), p.clone()))
        .collect();
    let mode = if required {
        ToolMode::Required
    } else {
        ToolMode::Auto
    };
    engine::constrain::tool_grammar(&tools, mode, false)
}

fn tools() -> Vec<(&'static str, Value)> {
    vec![
        (
            "get_weather",
            json!({"type": "object",
                   "properties": {"city": {"type": "string"},
                                  "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": false}),
        ),
        (
            "add",
            json!({"type": "object",
                   "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                   "required": ["x", "y"], "additionalProperties": false}),
        ),
    ]
}

#[test]
fn tool_call_grammar_generates_a_valid_call() {
    let tools = tools();
    let grammar = tool_grammar(&tools, true);
    eprintln!("{grammar}");
    let system = format!(
        "You can call these tools: {}. Call one as <tool_call>\\n{{\"name\": ..., \"arguments\": ...}}\\n</tool_call>.",
        serde_json::to_string(&tools.iter().map(|(n, p)| json!({"name": n, "parameters": p})).collect::<Vec<_>>()).unwrap()
    );
    let run = generate(
        Some(&system),
        "What is the weather in Paris?",
        &Constraint::Lark(grammar),
        120,
    );
    eprintln!("tool call: {:?}", run.text);
    assert!(run.ended, "did not finish: {}", run.text);
    let mut rest = run.text.as_str();
    let mut n = 0;
    while let Some(body) = rest.strip_prefix("<tool_call>\n") {
        let end = body.find("\n</tool_call>").expect("closing tag");
        let call: Value = serde_json::from_str(&body[..end]).expect("call is JSON");
        let (_, params) = tools
            .iter()
            .find(|(name, _)| call["name"] == *name)
            .expect("a known tool");
        validate(&call["arguments"], params);
        rest = body[end + "\n</tool_call>".len()..].trim_start_matches('\n');
        n += 1;
    }
    assert!(n >= 1 && rest.is_empty(), "{}", run.text);
}

/// The "auto" grammar, fed text by hand: prose is accepted and may end anywhere; text
/// that starts a tool call must continue as a valid one.
#[test]
fn tool_call_grammar_allows_text_or_a_call() {
    let m = model();
    let tok = &m.g.tokenizer;
    let c = Constraint::Lark(tool_grammar(&tools(), false));
    let feed = |text: &str| -> (Matcher, Result<(), String>) {
        let mut matcher = Matcher::new(&m.env, &c).unwrap();
        let r = tok
            .tokenize(text, false, false)
            .unwrap()
            .into_iter()
            .try_for_each(|t| matcher.accept(t));
        (matcher, r)
    };
    let eos = m.env.eog()[0];

    let (mut prose, r) = feed("The weather in Paris is usually mild.");
    r.unwrap();
    assert!(prose.is_allowed(eos), "prose may end");

    let (mut call, r) =
        feed("<tool_call>\n{\"name\": \"add\", \"arguments\": {\"x\": 1, \"y\": 2}}\n</tool_call>");
    r.unwrap();
    assert!(call.is_allowed(eos), "a complete call may end");

    let (_, r) = feed("<tool_call>\n{\"name\": \"delete_everything\"");
    assert!(r.is_err(), "an unknown tool is refused");
    let (_, r) = feed("<tool_call>\n{\"name\": \"add\", \"arguments\": {\"x\": \"one\"");
    assert!(r.is_err(), "arguments off the schema are refused");

    let (mut open, r) = feed("<tool_call>\n{\"name\": \"get_weather\", ");
    r.unwrap();
    assert!(!open.is_allowed(eos), "an open call may not end");
}

#[test]
fn constraint_serializes() {
    for c in [
        Constraint::JsonObject,
        Constraint::JsonSchema {
            schema: person_schema(),
            strict: true,
        },
        Constraint::Regex("a+".into()),
        Constraint::Lark("start: \"x\"".into()),
    ] {
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Constraint>(&s).unwrap(), c, "{s}");
    }
    let c: Constraint =
        serde_json::from_str(r#"{"json_schema": {"schema": {"type": "object"}}}"#).unwrap();
    assert_eq!(
        c,
        Constraint::JsonSchema {
            schema: json!({"type": "object"}),
            strict: false
        }
    );
}

#[test]
fn token_env_marks_control_tokens() {
    let m = model();
    let tok = &m.g.tokenizer;
    let im_end = tok.token_id("<|im_end|>").expect("SmolLM2 has <|im_end|>");
    assert!(m.env.eog().contains(&im_end));
    // a control token is reachable from a grammar by name, never from text
    let c = Constraint::Lark("start: \"Hi\" <|im_start|> \"x\"".into());
    let mut matcher = Matcher::new(&m.env, &c).unwrap();
    for t in tok.tokenize("Hi", false, false).unwrap() {
        matcher.accept(t).unwrap();
    }
    let im_start = tok.token_id("<|im_start|>").unwrap();
    assert!(matcher.is_allowed(im_start));
    let text_lt = tok.tokenize("<", false, false).unwrap()[0];
    assert!(!matcher.is_allowed(text_lt));
    matcher.accept(im_start).unwrap();
    let x = tok.tokenize("x", false, false).unwrap();
    matcher.accept(x[0]).unwrap();
    assert!(matcher.is_done());
    assert_eq!(
        matcher
            .allowed()
            .iter()
            .map(|w| w.count_ones())
            .sum::<u32>() as usize,
        m.env.eog().len()
    );
    assert!(matcher.accept(x[0]).is_err());
}
