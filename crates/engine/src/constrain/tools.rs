//! Tool calls as a grammar: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`
//! (the layout of Hermes/Qwen-style chat templates), the arguments following each tool's
//! JSON schema.

use super::matcher::lark_json;
use serde_json::{json, Value};

/// How the model may answer when it has tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolMode {
    /// Free text or tool calls (`tool_choice: "auto"`).
    Auto,
    /// Tool calls only (`"required"`, or a named function with one tool given).
    Required,
}

/// Opening and closing tags around one call.
pub const CALL_OPEN: &str = "<tool_call>\n";
pub const CALL_CLOSE: &str = "\n</tool_call>";

/// A Lark grammar for calls of `tools` (name, parameters schema): one call, or one or
/// more when `parallel`. In [`ToolMode::Auto`] any text that does not start a call is
/// allowed instead.
pub fn tool_grammar(tools: &[(String, Value)], mode: ToolMode, parallel: bool) -> String {
    let calls: Vec<Value> = tools
        .iter()
        .map(|(name, params)| {
            json!({
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": params},
                "required": ["name", "arguments"],
                "additionalProperties": false
            })
        })
        .collect();
    let args = lark_json(&json!({ "anyOf": calls }), false);
    let start = match mode {
        ToolMode::Required => "start: calls".to_string(),
        ToolMode::Auto => "start: TEXT | calls\nTEXT: /(?s:.+)/ & ~/(?s:\\s*<tool_call>.*)/".into(),
    };
    let calls = if parallel { "call+" } else { "call" };
    format!(
        "{start}\ncalls: {calls}\ncall: \"<tool_call>\\n\" args \"\\n</tool_call>\" \"\\n\"?\nargs: {args}\n"
    )
}

/// Splits generated text into the text before any call and the calls' JSON bodies
/// (`None` for the calls if the text holds no complete call).
pub fn parse_tool_calls(text: &str) -> (String, Vec<Value>) {
    let mut calls = Vec::new();
    let Some(start) = text.find(CALL_OPEN.trim_end()) else {
        return (text.to_string(), calls);
    };
    let mut rest = &text[start..];
    while let Some(body) = rest.trim_start().strip_prefix(CALL_OPEN.trim_end()) {
        let Some(end) = body.find(CALL_CLOSE.trim_start()) else {
            break;
        };
        match serde_json::from_str::<Value>(body[..end].trim()) {
            Ok(v) => calls.push(v),
            Err(_) => break,
        }
        rest = &body[end + CALL_CLOSE.trim_start().len()..];
    }
    (text[..start].trim_end().to_string(), calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_names_every_tool_and_mode() {
        let tools = vec![("add".to_string(), json!({"type": "object"}))];
        let g = tool_grammar(&tools, ToolMode::Required, false);
        assert!(g.starts_with("start: calls\ncalls: call\n"), "{g}");
        assert!(
            g.contains(r#""const":"add""#) || g.contains(r#""const": "add""#),
            "{g}"
        );
        let g = tool_grammar(&tools, ToolMode::Auto, true);
        assert!(g.contains("TEXT") && g.contains("calls: call+"), "{g}");
    }

    #[test]
    fn parses_calls_after_text() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"x\": 1}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call>";
        let (before, calls) = parse_tool_calls(text);
        assert_eq!(before, "Let me check.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["arguments"]["x"], 1);
        let (before, calls) = parse_tool_calls("plain answer");
        assert_eq!((before.as_str(), calls.len()), ("plain answer", 0));
    }
}
