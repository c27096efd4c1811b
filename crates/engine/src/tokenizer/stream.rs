//! Streaming detokenizer: token pieces in, whole UTF-8 characters out (a character split
//! across byte-fallback or byte-level tokens is held until its last byte arrives).

use super::Tokenizer;
use crate::error::Result;

/// Incremental detokenizer (tokens in, new text out), special tokens rendered.
pub struct TextStream<'a> {
    tok: &'a Tokenizer,
    pending: Vec<u8>,
}

impl<'a> TextStream<'a> {
    pub(super) fn new(tok: &'a Tokenizer) -> Self {
        TextStream {
            tok,
            pending: Vec::new(),
        }
    }

    /// Adds one token; returns the text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.pending.extend_from_slice(self.tok.piece(id));
        let mut text = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    text.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    text.push_str(std::str::from_utf8(&self.pending[..good]).unwrap_or_default());
                    match e.error_len() {
                        // an incomplete character at the end: wait for its next byte
                        None => {
                            self.pending.drain(..good);
                            break;
                        }
                        // bytes that can never be valid: replace them and go on
                        Some(bad) => {
                            text.push('\u{FFFD}');
                            self.pending.drain(..good + bad);
                        }
                    }
                }
            }
        }
        Ok((!text.is_empty()).then_some(text))
    }

    /// Whatever is still held back (an unfinished character), replaced lossily.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}
