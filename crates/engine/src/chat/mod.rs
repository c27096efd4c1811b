//! The model's chat template (`tokenizer.chat_template`), rendered with minijinja in the
//! environment Hugging Face templates expect: tools, tool calls, `bos_token`/`eos_token`,
//! `raise_exception`, `strftime_now`, Python-style `tojson` and string methods.

mod env;
mod json;
mod message;
mod time;

pub use message::ChatMessage;

use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;
use candle_core::quantized::gguf_file::Value;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// ChatML, used when a file carries no template.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// What a render gets besides the messages.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Open the assistant's turn at the end.
    pub add_generation_prompt: bool,
    /// OpenAI-style tool definitions (`[{"type": "function", "function": {...}}]`).
    pub tools: Option<serde_json::Value>,
    /// More template variables, e.g. `enable_thinking: false` for Qwen 3.
    pub vars: serde_json::Map<String, serde_json::Value>,
}

/// A compiled chat template plus the special tokens it may refer to.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos: String,
    eos: String,
    clock: env::Clock,
    tools: bool,
}

impl ChatTemplate {
    /// Reads `tokenizer.chat_template` from a GGUF file (ChatML if absent).
    pub fn from_gguf(path: &Path) -> Result<ChatTemplate> {
        Self::from_file(&GgufFile::open(path)?)
    }

    /// Reads the template from an open GGUF file.
    pub fn from_file(f: &GgufFile) -> Result<ChatTemplate> {
        let source = match f.meta("tokenizer.chat_template") {
            Some(Value::String(s)) => s.clone(),
            _ => CHATML.to_string(),
        };
        let token = |key: &str| {
            let id = f.meta(key).and_then(|v| v.to_u32().ok());
            match (f.meta("tokenizer.ggml.tokens"), id) {
                (Some(Value::Array(a)), Some(id)) => match a.get(id as usize) {
                    Some(Value::String(s)) => s.clone(),
                    _ => String::new(),
                },
                _ => String::new(),
            }
        };
        Self::new(
            &source,
            token("tokenizer.ggml.bos_token_id"),
            token("tokenizer.ggml.eos_token_id"),
        )
    }

    /// Compiles a template source; `bos`/`eos` are the `bos_token`/`eos_token` texts.
    pub fn new(source: &str, bos: String, eos: String) -> Result<ChatTemplate> {
        let clock: env::Clock = Arc::new(AtomicI64::new(i64::MIN));
        let mut env = env::environment(clock.clone());
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| EngineError::Template(format!("the template does not compile: {e:#}")))?;
        Ok(ChatTemplate {
            env,
            bos,
            eos,
            clock,
            tools: source.contains("tools"),
        })
    }

    /// Fixes the time `strftime_now` sees (Unix seconds, UTC); `None` = the system clock.
    pub fn set_now(&self, unix_secs: Option<i64>) {
        self.clock
            .store(unix_secs.unwrap_or(i64::MIN), Ordering::Relaxed);
    }

    /// Whether the template renders tool definitions (it refers to `tools`).
    pub fn supports_tools(&self) -> bool {
        self.tools
    }

    /// The `bos_token` text the template gets.
    pub fn bos_token(&self) -> &str {
        &self.bos
    }

    /// The `eos_token` text the template gets.
    pub fn eos_token(&self) -> &str {
        &self.eos
    }

    /// Renders the conversation; `add_generation_prompt` opens the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with(
            messages,
            &RenderOptions {
                add_generation_prompt,
                ..RenderOptions::default()
            },
        )
    }

    /// Renders the conversation with tools and extra variables.
    pub fn render_with(&self, messages: &[ChatMessage], opts: &RenderOptions) -> Result<String> {
        if messages.is_empty() {
            return Err(EngineError::InvalidInput(
                "a chat needs at least one message".into(),
            ));
        }
        let mut ctx = serde_json::Map::new();
        ctx.insert(
            "messages".into(),
            messages.iter().map(ChatMessage::to_json).collect(),
        );
        ctx.insert(
            "add_generation_prompt".into(),
            opts.add_generation_prompt.into(),
        );
        ctx.insert("bos_token".into(), self.bos.clone().into());
        ctx.insert("eos_token".into(), self.eos.clone().into());
        if let Some(tools) = &opts.tools {
            ctx.insert("tools".into(), tools.clone());
        }
        for (k, v) in &opts.vars {
            ctx.insert(k.clone(), v.clone());
        }
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| EngineError::Template(e.to_string()))?;
        tmpl.render(env::from_json(&serde_json::Value::Object(ctx)))
            .map_err(describe)
    }
}

/// A render error worded for the caller: the template's own refusal, or where it failed.
fn describe(e: minijinja::Error) -> EngineError {
    let detail = e.detail().unwrap_or_default();
    if let Some(msg) = detail.strip_prefix(env::RAISED) {
        return EngineError::Template(format!(
            "the model's template refused the conversation: {msg}"
        ));
    }
    let at = e
        .line()
        .map(|l| format!(" (template line {l})"))
        .unwrap_or_default();
    EngineError::Template(
        format!("{}{at}", e.kind()).to_string()
            + &if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            },
    )
}
