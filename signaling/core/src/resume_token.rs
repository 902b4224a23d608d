//! The secret that resumes a session. On the wire it is a plain string (in
//! the welcome and in `join.resume`); inside the core it is this type, so
//! that it cannot be printed by accident: its `Debug` shows four characters.

use crate::hub::Entropy;
use std::fmt;

/// A session's resume token: 128 random bits as 32 hex digits when the hub
/// makes it; whatever a client sent when it comes from the wire.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResumeToken(String);

/// Characters of a token that `Debug` shows: enough to tell two apart in a
/// test failure, far too few to resume anything.
const SHOWN: usize = 4;

impl ResumeToken {
    /// A fresh token from the shell's entropy.
    pub fn generate(entropy: &mut Entropy) -> Self {
        Self(format!("{:032x}", entropy()))
    }

    /// A token as a client presented it.
    pub fn from_wire(token: &str) -> Self {
        Self(token.to_owned())
    }

    /// The text for the wire (the welcome's `resume_token`).
    pub fn to_wire(&self) -> String {
        self.0.clone()
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.0.chars().take(SHOWN).collect();
        write!(f, "ResumeToken({shown}…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let mut n = 0u128;
        let mut entropy: Entropy = Box::new(move || {
            n += 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef;
            n
        });
        let token = ResumeToken::generate(&mut entropy);
        assert_eq!(token.to_wire(), "0123456789abcdef0123456789abcdef");
        assert_eq!(format!("{token:?}"), "ResumeToken(0123…)");
        assert_eq!(format!("{:?}", ResumeToken::from_wire("ab")), "ResumeToken(ab…)");
    }
}
