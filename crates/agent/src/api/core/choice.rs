//! One choice's text as it arrives: released as content at once, unless tools are on and
//! the text may still be (or is) a tool call, which is held to the end and parsed. A call
//! cut short (by `max_tokens`) is still returned as a call, with the arguments generated
//! so far, never as the model's call markup.

use engine::constrain::{parse_tool_calls, ToolMode, CALL_CLOSE, CALL_OPEN};
use serde_json::Value;

use crate::api::openai::{FunctionCall, ToolCall};
use crate::serving::Finished;

/// A sampled token: its id, text, log-probability and the alternatives asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub id: u32,
    pub text: String,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// How a choice ended: its last content, its calls, the tokens not yet reported.
#[derive(Debug, Clone)]
pub struct Ending {
    pub content: Option<String>,
    pub calls: Vec<ToolCall>,
    pub sampled: Vec<Sampled>,
    /// OpenAI's `finish_reason`: `stop`, `length` or `tool_calls`.
    pub reason: String,
    pub finished: Finished,
}

/// The text of one choice so far.
pub struct ChoiceState {
    tools: Option<ToolMode>,
    text: String,
    sent: usize,
    /// Whether the text is known to be a call (`Some(true)`) or content (`Some(false)`).
    call: Option<bool>,
    pending: Vec<Sampled>,
    done: Option<Finished>,
}

impl ChoiceState {
    pub fn new(tools: Option<ToolMode>) -> Self {
        let call = match tools {
            None => Some(false),
            Some(ToolMode::Required) => Some(true),
            Some(ToolMode::Auto) => None,
        };
        ChoiceState {
            tools,
            text: String::new(),
            sent: 0,
            call,
            pending: Vec::new(),
            done: None,
        }
    }

    /// Adds text (and the token it came from); gives what can be sent now.
    pub fn push(&mut self, text: &str, token: Option<Sampled>) -> Option<(String, Vec<Sampled>)> {
        self.text.push_str(text);
        self.pending.extend(token);
        self.release()
    }

    /// Adds a sampled token (its text taken from it, not copied twice).
    pub fn push_token(&mut self, token: Sampled) -> Option<(String, Vec<Sampled>)> {
        self.text.push_str(&token.text);
        self.pending.push(token);
        self.release()
    }

    /// What can be sent now: the new content and its tokens, unless it may be a call.
    fn release(&mut self) -> Option<(String, Vec<Sampled>)> {
        if self.call.is_none() {
            let open = CALL_OPEN.trim_end();
            let t = self.text.trim_start();
            if t.starts_with(open) {
                self.call = Some(true);
            } else if !open.starts_with(t) {
                self.call = Some(false);
            }
        }
        if self.call != Some(false) {
            return None;
        }
        let content = self.text[self.sent..].to_string();
        self.sent = self.text.len();
        let toks = std::mem::take(&mut self.pending);
        (!content.is_empty() || !toks.is_empty()).then_some((content, toks))
    }

    /// Whether the choice has ended.
    pub fn is_done(&self) -> bool {
        self.done.is_some()
    }

    /// The statistics of an ended choice.
    pub fn finished(&self) -> Option<&Finished> {
        self.done.as_ref()
    }

    /// Ends the choice: the rest of its content, or its calls (whole or cut short).
    pub fn finish(&mut self, f: Finished) -> Ending {
        let sampled = std::mem::take(&mut self.pending);
        self.done = Some(f.clone());
        let undecided_empty = self.call.is_none() && self.text.trim().is_empty();
        if self.tools.is_some() && self.call != Some(false) && !undecided_empty {
            let (mut before, mut calls) = parse_tool_calls(&self.text);
            let cut = calls.is_empty();
            if cut {
                // Text before the cut call's opening tag (none when the text is a part of
                // the tag itself).
                let open = CALL_OPEN.trim_end();
                before = self
                    .text
                    .find(open)
                    .map_or(String::new(), |k| self.text[..k].trim_end().to_string());
                calls.push(partial_call(&self.text));
            }
            {
                self.sent = self.text.len();
                let reason = if cut || f.finish_reason == "length" {
                    "length"
                } else {
                    "tool_calls"
                };
                return Ending {
                    content: (!before.is_empty()).then_some(before),
                    calls: calls.into_iter().map(to_tool_call).collect(),
                    sampled,
                    reason: reason.into(),
                    finished: f,
                };
            }
        }
        let rest = self.text[self.sent..].to_string();
        self.sent = self.text.len();
        Ending {
            content: (!rest.is_empty()).then_some(rest),
            calls: Vec::new(),
            sampled,
            reason: f.finish_reason.into(),
            finished: f,
        }
    }
}

/// A call the model began but did not finish (`<tool_call>\n{"name": "f", "arguments":
/// {"x": 1` ...): its name (empty when even that was cut) and the arguments' text so far,
/// as OpenAI returns a call cut by `max_tokens` (the text is a call, or the start of its
/// opening tag).
fn partial_call(text: &str) -> Value {
    let body = text
        .trim_start()
        .strip_prefix(CALL_OPEN.trim_end())
        .unwrap_or("");
    let body = body.split(CALL_CLOSE.trim_start()).next().unwrap_or(body);
    let name = string_after(body, "\"name\"").unwrap_or_default();
    let arguments = body
        .find("\"arguments\"")
        .and_then(|k| {
            let rest = body[k + "\"arguments\"".len()..].trim_start();
            rest.strip_prefix(':').map(str::trim_start)
        })
        .unwrap_or("");
    serde_json::json!({"name": name, "arguments_text": arguments.trim_end()})
}

/// The JSON string value after `key` and a colon, if it is complete.
fn string_after(body: &str, key: &str) -> Option<String> {
    let rest = body[body.find(key)? + key.len()..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let mut de = serde_json::Deserializer::from_str(rest).into_iter::<String>();
    de.next()?.ok()
}

/// `{"name", "arguments"}` from the model to an OpenAI tool call (`arguments` as JSON
/// text; a cut call's text as it was generated).
fn to_tool_call(v: Value) -> ToolCall {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let arguments = match (v.get("arguments"), v.get("arguments_text")) {
        (Some(a), _) => a.to_string(),
        (None, Some(Value::String(t))) => t.clone(),
        _ => "{}".into(),
    };
    ToolCall {
        id: format!("call_{}", &id[..24]),
        kind: "function".into(),
        function: FunctionCall {
            name: v["name"].as_str().unwrap_or_default().into(),
            arguments,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(reason: &'static str) -> Finished {
        Finished {
            finish_reason: reason,
            prompt_tokens: 1,
            completion_tokens: 1,
            cached_tokens: 0,
            ttft: Default::default(),
            total: Default::default(),
            tokens_per_second: 0.0,
        }
    }

    #[test]
    fn text_is_released_unless_it_may_be_a_call() {
        let mut plain = ChoiceState::new(None);
        assert_eq!(plain.push("<tool", None).unwrap().0, "<tool");

        let mut auto = ChoiceState::new(Some(ToolMode::Auto));
        assert!(auto.push(" <to", None).is_none(), "may still be a call");
        assert!(auto
            .push(
                "ol_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
                None
            )
            .is_none());
        let e = auto.finish(finished("stop"));
        assert_eq!(
            (e.calls.len(), e.content, e.reason.as_str()),
            (1, None, "tool_calls")
        );
        assert_eq!(e.calls[0].function.name, "f");
        assert_eq!(e.calls[0].function.arguments, "{}");

        let mut prose = ChoiceState::new(Some(ToolMode::Auto));
        assert!(prose.push("<", None).is_none());
        assert_eq!(prose.push("b>old", None).unwrap().0, "<b>old");
        assert!(prose.finish(finished("stop")).calls.is_empty());
    }

    #[test]
    fn a_call_cut_short_is_a_call_never_markup() {
        let mut cut = ChoiceState::new(Some(ToolMode::Required));
        let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par";
        assert!(cut.push(text, None).is_none());
        let e = cut.finish(finished("length"));
        assert_eq!(e.content, None, "no markup as content");
        assert_eq!(e.reason, "length");
        assert_eq!(e.calls.len(), 1);
        assert_eq!(e.calls[0].function.name, "get_weather");
        assert_eq!(e.calls[0].function.arguments, "{\"city\": \"Par");

        // Cut inside the name: a call without a name yet, still no markup.
        let mut early = ChoiceState::new(Some(ToolMode::Required));
        assert!(early
            .push("<tool_call>\n{\"name\": \"get_w", None)
            .is_none());
        let e = early.finish(finished("length"));
        assert_eq!((e.content, e.calls.len()), (None, 1));
        assert_eq!(e.calls[0].function.name, "");
        assert_eq!(e.calls[0].function.arguments, "");

        // Cut inside the opening tag.
        let mut tag = ChoiceState::new(Some(ToolMode::Required));
        assert!(tag.push("<tool_", None).is_none());
        let e = tag.finish(finished("length"));
        assert_eq!((e.content, e.calls.len()), (None, 1));

        // Auto mode that ended at once is plain (empty) content.
        let mut empty = ChoiceState::new(Some(ToolMode::Auto));
        let e = empty.finish(finished("stop"));
        assert!(e.calls.is_empty() && e.content.is_none());
        assert_eq!(e.reason, "stop");
    }
}
