//! Token ids back to bytes: each token's piece (llama.cpp's `token_to_piece`) and the
//! whole-sequence `detokenize` with its leading-space and `clean_spaces` rules.

use super::vocab::{attr, Vocab};
use super::Kind;

/// Whether GPT-2's byte-to-character map keeps byte `b` as the character `b`.
fn is_direct(b: u32) -> bool {
    (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
}

/// GPT-2's byte-to-character map, inverted: the byte each printable stand-in encodes
/// (the 68 other bytes are U+0100.. in byte order).
fn byte_of(c: char) -> Option<u8> {
    static SHIFTED: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let c = c as u32;
    if is_direct(c) {
        return Some(c as u8);
    }
    let shifted = SHIFTED.get_or_init(|| {
        (0u32..256)
            .filter(|&b| !is_direct(b))
            .map(|b| b as u8)
            .collect()
    });
    c.checked_sub(256)
        .and_then(|i| shifted.get(i as usize).copied())
}

/// Bytes of a byte-level BPE token text; characters outside the map are kept visible.
fn byte_level_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for ch in text.chars() {
        match byte_of(ch) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in ch.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// The byte of a `<0xNN>` token.
fn hex_byte(text: &str) -> Option<u8> {
    u8::from_str_radix(text.get(3..5)?, 16).ok()
}

/// The piece of every token with specials rendered (llama.cpp's piece cache).
pub(super) fn pieces(vocab: &Vocab, kind: Kind) -> Vec<Vec<u8>> {
    (0..vocab.texts.len())
        .map(|i| {
            let (text, a) = (&vocab.texts[i], vocab.attrs[i]);
            if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
                text.as_bytes().to_vec()
            } else if a & attr::NORMAL != 0 {
                match kind {
                    Kind::Spm => text.replace('\u{2581}', " ").into_bytes(),
                    Kind::Bpe => byte_level_decode(text),
                }
            } else if a & attr::BYTE != 0 {
                hex_byte(text).map(|b| vec![b]).unwrap_or_default()
            } else {
                Vec::new()
            }
        })
        .collect()
}

/// Whether a token's piece is hidden unless specials are rendered.
pub(super) fn is_hidden(vocab: &Vocab, id: u32) -> bool {
    vocab.attr(id) & (attr::UNKNOWN | attr::CONTROL) != 0
}

/// llama.cpp's `detokenize`: pieces joined, one leading space dropped for a first token
/// of SPM-style vocabularies (`add_space_prefix`), then `clean_spaces` if the vocabulary
/// asks for it.
pub(super) fn detokenize(
    vocab: &Vocab,
    pieces: &[Vec<u8>],
    mut ids: &[u32],
    remove_special: bool,
    unparse_special: bool,
) -> Vec<u8> {
    let mut remove_space = vocab.add_space_prefix;
    if remove_special && vocab.add_bos && !ids.is_empty() && ids.first().copied() == vocab.bos {
        remove_space = false;
        ids = &ids[1..];
    }
    if remove_special && vocab.add_eos && !ids.is_empty() && ids.last().copied() == vocab.eos {
        ids = &ids[..ids.len() - 1];
    }
    let mut text = Vec::new();
    for &id in ids {
        let mut piece: &[u8] = match pieces.get(id as usize) {
            Some(p) if unparse_special || !is_hidden(vocab, id) => p,
            _ => &[],
        };
        if remove_space && piece.first() == Some(&b' ') {
            piece = &piece[1..];
        }
        remove_space = false;
        text.extend_from_slice(piece);
    }
    if vocab.clean_spaces {
        clean_spaces(&mut text);
    }
    text
}

/// llama.cpp's three `clean_spaces` passes, byte for byte (in place, same indexing).
fn clean_spaces(text: &mut Vec<u8>) {
    // first pass: " ?", " !", " .", " ," lose the space
    let n = text.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
    // second pass: a single apostrophe between spaces loses both spaces
    let n = text.len();
    let mut total = usize::from(n > 0);
    let mut i = 1;
    while i < n {
        let x = text[i];
        if x == b'\'' && i + 1 < n && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    text.truncate(total);
    // third pass: " 's", " 'm", " 're", " 've" lose the space
    let n = text.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = text[i + 1];
            if x1 == b's' || x1 == b'm' {
                total -= 1;
            } else if x1 != b't' && x1 != b'd' && i + 2 < n {
                let x2 = text[i + 2];
                if (x1 == b'r' || x1 == b'v') && x2 == b'e' {
                    total -= 1;
                }
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str) -> String {
        let mut v = s.as_bytes().to_vec();
        clean_spaces(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn clean_spaces_like_llama_cpp() {
        assert_eq!(clean("Hello , world !"), "Hello, world!");
        assert_eq!(clean("it ' s"), "it's");
        assert_eq!(
            clean("he 's and we 're but don 't"),
            "he's and we're but don 't"
        );
        assert_eq!(clean(""), "");
    }

    #[test]
    fn byte_level_map_round_trips() {
        assert_eq!(byte_of('Ġ'), Some(b' '));
        assert_eq!(byte_of('Ċ'), Some(b'\n'));
        assert_eq!(byte_of('a'), Some(b'a'));
        assert_eq!(byte_level_decode("ĠHello"), b" Hello");
    }
}
