//! Splitting special tokens out of text before tokenizing (llama.cpp's
//! `tokenizer_st_partition`): longest special first, every occurrence, left to right.

use super::vocab::{attr, Vocab};

/// A piece of the input: text still to tokenize, or a special token already found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// The fragments of `text`. Control and unknown tokens are found only with
/// `parse_special`; user-defined tokens always are.
pub(super) fn partition<'a>(
    vocab: &Vocab,
    text: &'a str,
    parse_special: bool,
) -> Vec<Fragment<'a>> {
    let mut frags = vec![Fragment::Text(text)];
    if text.is_empty() {
        return Vec::new();
    }
    for &id in &vocab.specials {
        let a = vocab.attr(id);
        if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
            continue;
        }
        let needle = vocab.texts[id as usize].as_str();
        if !frags
            .iter()
            .any(|f| matches!(f, Fragment::Text(t) if t.contains(needle)))
        {
            continue;
        }
        let mut out = Vec::with_capacity(frags.len() + 2);
        for f in frags {
            match f {
                Fragment::Text(t) => split(t, needle, id, a, &mut out),
                tok => out.push(tok),
            }
        }
        frags = out;
    }
    frags
}

fn split<'a>(text: &'a str, needle: &str, id: u32, a: u32, out: &mut Vec<Fragment<'a>>) {
    let mut rest = text;
    while let Some(pos) = rest.find(needle) {
        let mut left = &rest[..pos];
        if a & attr::LSTRIP != 0 {
            left = left.trim_end_matches(is_c_space);
        }
        if !left.is_empty() {
            out.push(Fragment::Text(left));
        }
        out.push(Fragment::Token(id));
        rest = &rest[pos + needle.len()..];
        if a & attr::RSTRIP != 0 {
            rest = rest.trim_start_matches(is_c_space);
        }
    }
    if !rest.is_empty() {
        out.push(Fragment::Text(rest));
    }
}
