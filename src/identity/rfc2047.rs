//! RFC 2047 encoded words, as `tailscale serve` uses for non-ASCII user names and logins
//! (`=?utf-8?q?Zo=C3=AB?=`). Only UTF-8 and US-ASCII charsets are decoded; anything else is returned
//! unchanged rather than guessed at.

use base64::Engine;

/// Decodes every encoded word in `input`; whitespace between two adjacent encoded words is dropped, as
/// RFC 2047 §6.2 requires.
pub fn decode(input: &str) -> String {
    if !input.contains("=?") {
        return input.to_string();
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    let mut pending_ws: Option<&str> = None;
    let mut last_was_word = false;
    while !rest.is_empty() {
        if let Some((decoded, consumed)) = encoded_word(rest) {
            if let Some(ws) = pending_ws.take() {
                if !last_was_word {
                    out.push_str(ws);
                }
            }
            out.push_str(&decoded);
            rest = &rest[consumed..];
            last_was_word = true;
            continue;
        }
        let ws_len = rest.len() - rest.trim_start().len();
        if ws_len > 0 {
            if let Some(ws) = pending_ws.take() {
                out.push_str(ws);
            }
            pending_ws = Some(&rest[..ws_len]);
            rest = &rest[ws_len..];
            continue;
        }
        if let Some(ws) = pending_ws.take() {
            out.push_str(ws);
        }
        let ch = rest.chars().next().unwrap_or(' ');
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
        last_was_word = false;
    }
    if let Some(ws) = pending_ws {
        out.push_str(ws);
    }
    out
}

/// Parses one `=?charset?enc?text?=` at the start of `s`: the decoded text and the bytes consumed.
fn encoded_word(s: &str) -> Option<(String, usize)> {
    let body = s.strip_prefix("=?")?;
    let (charset, rest) = body.split_once('?')?;
    let (enc, rest) = rest.split_once('?')?;
    let end = rest.find("?=")?;
    let text = &rest[..end];
    if text.contains(char::is_whitespace) {
        return None;
    }
    let consumed = 2 + charset.len() + 1 + enc.len() + 1 + end + 2;
    let charset = charset.split('*').next().unwrap_or("").to_ascii_lowercase();
    if charset != "utf-8" && charset != "us-ascii" {
        return None;
    }
    let bytes = match enc {
        "q" | "Q" => q_decode(text)?,
        "b" | "B" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?,
        _ => return None,
    };
    let decoded = String::from_utf8(bytes).ok()?;
    Some((decoded, consumed))
}

fn q_decode(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'_' => {
                out.push(b' ');
                i += 1;
            }
            b'=' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_q_and_b_words() {
        assert_eq!(decode("=?utf-8?q?Zo=C3=AB_Sch=C3=A4fer?="), "Zoë Schäfer");
        assert_eq!(decode("=?UTF-8?Q?J=C3=B6rg?="), "Jörg");
        assert_eq!(decode("=?utf-8?b?SsO2cmc=?="), "Jörg");
        assert_eq!(decode("plain@example.com"), "plain@example.com");
    }

    #[test]
    fn adjacent_words_join_and_text_is_kept() {
        assert_eq!(decode("=?utf-8?q?a?= =?utf-8?q?b?="), "ab");
        assert_eq!(decode("x =?utf-8?q?=C3=A9?= y"), "x é y");
    }

    #[test]
    fn unknown_charsets_and_broken_words_stay_as_they_are() {
        assert_eq!(decode("=?iso-8859-1?q?=E9?="), "=?iso-8859-1?q?=E9?=");
        assert_eq!(decode("=?utf-8?q?=ZZ?="), "=?utf-8?q?=ZZ?=");
        assert_eq!(decode("=?utf-8?q?=FF?="), "=?utf-8?q?=FF?=");
    }
}
