//! Join tokens: HS256 JWTs that name the room and the identity, with an
//! expiry checked against the time the shell passes in.

use serde::{Deserialize, Serialize};
use switchboard_protocol::{ErrorCode, Role, RoomMode, RoomName};

/// Tolerated clock difference between the token issuer and this server.
pub const CLOCK_SKEW_LEEWAY_S: u64 = 30;

/// The claims a join token must carry (`room`, `sub`, `exp`) and may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The one room this token admits to.
    pub room: String,
    /// The participant's identity, shown to the others as `identity`.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// The room's mode, if this token's join creates it (ignored for a room
    /// that exists: the mode is fixed at creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RoomMode>,
    /// `sfu`: the holder may join as the room's forwarding unit.
    #[serde(default, skip_serializing_if = "Role::is_participant")]
    pub role: Role,
}

/// Checks join tokens against the server's secret.
#[derive(Clone)]
pub struct TokenVerifier {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenVerifier { .. }")
    }
}

impl TokenVerifier {
    /// A verifier for tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        // Expiry is checked below against the caller's clock, so that the
        // core stays deterministic.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        // Issuers often add an audience; the room claim is what binds a
        // token here, so `aud` is neither required nor checked.
        validation.validate_aud = false;
        Self { key: jsonwebtoken::DecodingKey::from_secret(secret), validation }
    }

    /// The token's claims if it is genuine, for `room`, and not expired at
    /// `now_unix_s`; otherwise why not (its [`TokenError::code`] and text
    /// are what the client is told).
    pub fn verify(&self, token: &str, room: &RoomName, now_unix_s: u64) -> Result<Claims, TokenError> {
        let claims = self.verify_any_room(token, now_unix_s)?;
        if claims.room != room.as_str() {
            return Err(TokenError::WrongRoom);
        }
        Ok(claims)
    }

    /// The token's claims if it is genuine and not expired, whatever room it
    /// names: for requests that belong to no room (TURN credentials over
    /// HTTP).
    pub fn verify_any_room(&self, token: &str, now_unix_s: u64) -> Result<Claims, TokenError> {
        let claims = self.genuine(token)?;
        if claims.exp.saturating_add(CLOCK_SKEW_LEEWAY_S) < now_unix_s {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// The claims of a genuine token for `room`, expired or not: for a
    /// resume. The session was admitted while the token was valid; the
    /// resume token (secret, rotated, dead after the grace) proves the
    /// client is that session, and the join token still proves who it is
    /// and for which room. A join token shorter-lived than a call must not
    /// end the call at the first network drop after it expires.
    pub fn verify_for_resume(&self, token: &str, room: &RoomName) -> Result<Claims, TokenError> {
        let claims = self.genuine(token)?;
        if claims.room != room.as_str() {
            return Err(TokenError::WrongRoom);
        }
        Ok(claims)
    }

    /// Signature and claim rules, not expiry.
    fn genuine(&self, token: &str) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        check_claims(&data.claims)?;
        Ok(data.claims)
    }
}

/// Why a join token is refused. The text is what the client reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token signed with this server's secret (the text says why).
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Genuine, but its claims break the rules every token follows.
    #[error(transparent)]
    Claims(#[from] ClaimsError),
    /// Genuine, but for another room.
    #[error("token is for another room")]
    WrongRoom,
    /// Genuine, but expired (beyond the clock skew leeway).
    #[error("token has expired")]
    Expired,
}

impl TokenError {
    /// The wire error code for it: `token_expired` for an expired token,
    /// `unauthorized` for everything else.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Expired => ErrorCode::TokenExpired,
            Self::Invalid(_) | Self::Claims(_) | Self::WrongRoom => ErrorCode::Unauthorized,
        }
    }
}

/// Why a token's claims break the rules (see [`check_claims`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// `room` is not a room name.
    #[error("token room must be 1-64 characters of A-Z a-z 0-9 _ - .")]
    Room,
    /// `sub` is empty, too long or padded with spaces.
    #[error("token subject must be 1-{MAX_IDENTITY_BYTES} bytes without surrounding spaces")]
    SubjectShape,
    /// `sub` is not a label others can read (the text says why).
    #[error("token subject {0}")]
    SubjectLabel(&'static str),
}

/// Longest identity (`sub`), in bytes.
pub const MAX_IDENTITY_BYTES: usize = 128;

/// The rules every token's claims follow, whoever minted it: a room name
/// the protocol accepts, and an identity that is a label others can read
/// (see [`switchboard_protocol::text::check_label`]). `switchboard token`
/// refuses to mint what the server would refuse.
pub fn check_claims(claims: &Claims) -> Result<(), ClaimsError> {
    if RoomName::new(claims.room.clone()).is_err() {
        return Err(ClaimsError::Room);
    }
    if claims.sub.is_empty() || claims.sub.len() > MAX_IDENTITY_BYTES || claims.sub.trim() != claims.sub {
        return Err(ClaimsError::SubjectShape);
    }
    switchboard_protocol::text::check_label(&claims.sub).map_err(ClaimsError::SubjectLabel)
}

/// Signs `claims` with `secret` (HS256): for operators' tooling and tests.
pub fn mint_token(secret: &[u8], claims: &Claims) -> String {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    // HS256 signing with an HMAC key cannot fail.
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_secret(secret))
        .unwrap_or_else(|e| unreachable!("HS256 signing failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims(room: &str, exp: u64) -> Claims {
        Claims { room: room.into(), sub: "ada".into(), exp, ..Claims::default() }
    }

    #[test]
    fn accepts_a_good_token() {
        let v = TokenVerifier::new(SECRET);
        let t = mint_token(SECRET, &claims("demo", 2000));
        assert_eq!(v.verify(&t, &RoomName::new("demo").unwrap(), 1000).unwrap().sub, "ada");
    }

    #[test]
    fn refuses_expired_wrong_room_and_forged() {
        let v = TokenVerifier::new(SECRET);
        let room = RoomName::new("demo").unwrap();
        let expired = mint_token(SECRET, &claims("demo", 1000));
        assert_eq!(
            v.verify(&expired, &room, 1000 + CLOCK_SKEW_LEEWAY_S + 1).unwrap_err().code(),
            ErrorCode::TokenExpired
        );
        let other = mint_token(SECRET, &claims("other", 2000));
        assert_eq!(v.verify(&other, &room, 1000).unwrap_err().code(), ErrorCode::Unauthorized);
        let forged = mint_token(b"another secret another secret!!!", &claims("demo", 2000));
        assert_eq!(v.verify(&forged, &room, 1000).unwrap_err().code(), ErrorCode::Unauthorized);
        assert_eq!(v.verify("garbage", &room, 1000).unwrap_err().code(), ErrorCode::Unauthorized);
    }

    #[test]
    fn refuses_identities_others_cannot_read() {
        let v = TokenVerifier::new(SECRET);
        let room = RoomName::new("demo").unwrap();
        for sub in ["", " ada", "ad\u{202E}a", "\u{200B}", "nul\0", "esc\u{1b}"] {
            let t = mint_token(SECRET, &Claims { sub: sub.into(), ..claims("demo", 2000) });
            assert_eq!(v.verify(&t, &room, 1000).unwrap_err().code(), ErrorCode::Unauthorized, "{sub:?}");
        }
        assert_eq!(check_claims(&Claims { room: "has space".into(), ..claims("x", 1) }), Err(ClaimsError::Room));
        let padded = Claims { sub: " ada".into(), ..claims("x", 1) };
        assert_eq!(
            check_claims(&padded).unwrap_err().to_string(),
            "token subject must be 1-128 bytes without surrounding spaces"
        );
        let expired = mint_token(SECRET, &claims("demo", 1000));
        let err = v.verify(&expired, &room, 1000 + CLOCK_SKEW_LEEWAY_S + 1).unwrap_err();
        assert_eq!(err.to_string(), "token has expired", "the text the client reads is unchanged");
        let forged = v.verify("garbage", &room, 1000).unwrap_err().to_string();
        assert!(forged.starts_with("invalid token: "), "{forged}");
    }
}
