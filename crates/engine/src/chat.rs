//! The model's chat template, rendered with a real Jinja engine (minijinja).

use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;
use candle_core::quantized::gguf_file::Value;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// ChatML, used when a file carries no template.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A compiled chat template plus the special tokens it may refer to.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos: String,
    eos: String,
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
        let token = |id: u32| match f.meta("tokenizer.ggml.tokens") {
            Some(Value::Array(a)) => match a.get(id as usize) {
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        Self::new(
            &source,
            token(f.info.bos_token_id),
            token(f.info.eos_token_id),
        )
    }

    /// Compiles a template source.
    pub fn new(source: &str, bos: String, eos: String) -> Result<ChatTemplate> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| EngineError::Template(e.to_string()))?;
        Ok(ChatTemplate { env, bos, eos })
    }

    /// Renders the conversation; `add_generation_prompt` opens the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        if messages.is_empty() {
            return Err(EngineError::InvalidInput(
                "a chat needs at least one message".into(),
            ));
        }
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| EngineError::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages
                .iter()
                .map(|m| minijinja::context! { role => m.role.as_str(), content => m.content.as_str() })
                .collect::<Vec<_>>(),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        })
        .map_err(|e| EngineError::Template(e.to_string()))
    }
}
