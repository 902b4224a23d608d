//! What text the service accepts from people, in one place: names and
//! identities are shown to everyone in a room, so they may not reorder or
//! hide what is around them; chat keeps any text a person can type, but no
//! terminal or protocol control characters.

/// Bidirectional embeddings, overrides and isolates (U+202A-U+202E,
/// U+2066-U+2069): they reorder the text *after* them, so a name holding one
/// can make the line it is shown in say something else.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that take no space on screen: a name made only of these (and
/// spaces) looks empty, or like someone else's.
pub fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}' | '\u{180E}')
        || is_bidi_control(c)
}

/// A name or identity shown to others: no control characters (C0, DEL,
/// C1: NUL, ESC and friends), no bidi controls, and something visible.
pub fn check_label(value: &str) -> Result<(), &'static str> {
    if value.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return Err("must not contain control characters or bidirectional overrides");
    }
    if value.chars().all(is_invisible) {
        return Err("must contain a visible character");
    }
    Ok(())
}

/// Chat text: anything a person can type, including newlines and tabs, but
/// no other C0 control character (NUL, ESC, ...) and not only invisible
/// characters.
pub fn check_chat(value: &str) -> Result<(), &'static str> {
    if value.chars().any(|c| c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r')) {
        return Err("chat text must not contain control characters (tab and newline are fine)");
    }
    if value.chars().all(is_invisible) {
        return Err("chat text must not be empty");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(check_label("Ada Lovelace").is_ok());
        assert!(check_label("Zoë 🎉").is_ok());
        assert!(check_label("عائشة").is_ok(), "right-to-left script is fine");
        for bad in ["a\u{202E}b", "\u{2066}x", "nul\0", "esc\u{1b}[31m", "del\u{7f}", "c1\u{85}"] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
        for invisible in ["\u{200B}", "\u{200B}\u{200D} ", "\u{FEFF}", " "] {
            assert!(check_label(invisible).is_err(), "{invisible:?}");
        }
    }

    #[test]
    fn chat() {
        assert!(check_chat("line one\nline two\ttab\r\n").is_ok());
        assert!(check_chat("\u{202E} bidi is text in chat").is_ok());
        for bad in ["nul\0", "\u{1b}[2J", "bell\u{7}"] {
            assert!(check_chat(bad).is_err(), "{bad:?}");
        }
        assert!(check_chat("\u{200B}\u{200B}").is_err());
        assert!(check_chat(" \n ").is_err());
    }
}
