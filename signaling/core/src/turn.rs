//! Time-limited TURN credentials in coturn's `use-auth-secret` form (the
//! "TURN REST API" scheme): the username is `<expiry unix s>:<participant>`
//! and the password is base64(HMAC-SHA1(secret, username)). coturn checks
//! them with the same shared secret and no call to us.
//!
//! coturn accepts any expiry and does not end an allocation when its
//! credentials expire, so the lifetime is capped here, where credentials are
//! made: [`MAX_TURN_TTL_S`] whatever the configuration says.

use switchboard_protocol::IceServer;

/// The longest lifetime the server ever gives TURN credentials: a day. A
/// configuration asking for more is refused at start.
pub const MAX_TURN_TTL_S: u64 = 24 * 3600;

/// Default lifetime: long enough for most calls, short enough that a leaked
/// credential is soon useless. Clients refresh before expiry.
pub const DEFAULT_TURN_TTL_S: u64 = 3600;

/// Secrets accepted at once: the current one and, during a rotation, the one
/// before it.
pub const MAX_TURN_SECRETS: usize = 2;

/// Shortest TURN secret accepted, in bytes.
pub const MIN_TURN_SECRET_BYTES: usize = 16;

/// Why a TURN configuration is refused at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnConfigError {
    /// No secret, or more than [`MAX_TURN_SECRETS`] (the count given).
    #[error("TURN needs 1 or {MAX_TURN_SECRETS} secrets (current first), got {0}")]
    SecretCount(usize),
    /// A secret shorter than [`MIN_TURN_SECRET_BYTES`].
    #[error("every TURN secret must be at least {MIN_TURN_SECRET_BYTES} bytes")]
    ShortSecret,
    /// No URL, or one that is not `turn:`/`turns:`.
    #[error("TURN URLs must be given and start with turn: or turns:")]
    Urls,
    /// A credential lifetime of 0 or above [`MAX_TURN_TTL_S`] (the one given).
    #[error("the TURN credential lifetime must be 1 to {MAX_TURN_TTL_S} s, got {0}")]
    Lifetime(u64),
}

/// Where TURN is and how credentials for it are made.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnConfig {
    /// Shared secrets, newest first. Credentials are signed with the first;
    /// [`TurnConfig::check`] accepts any (coturn is given all of them too).
    secrets: Vec<String>,
    /// `turn:`/`turns:` URLs.
    pub urls: Vec<String>,
    /// Lifetime of issued credentials, seconds.
    pub ttl_s: u64,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("secrets", &self.secrets.len())
            .field("urls", &self.urls)
            .field("ttl_s", &self.ttl_s)
            .finish()
    }
}

/// One credential, with what the TURN REST API reply needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredential {
    /// `<expiry>:<participant>`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
    /// Seconds from issue to expiry.
    pub ttl_s: u64,
    /// Expiry, Unix seconds.
    pub expires_unix_s: u64,
}

/// Why credentials are not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialProblem {
    /// The username is not `<expiry>:<participant>`.
    Malformed,
    /// The expiry has passed.
    Expired,
    /// No accepted secret produces this password.
    WrongPassword,
}

impl TurnConfig {
    /// A configuration, checked: 1 or 2 secrets of at least
    /// [`MIN_TURN_SECRET_BYTES`], at least one URL, and a lifetime from 1 s
    /// to [`MAX_TURN_TTL_S`].
    pub fn new(secrets: Vec<String>, urls: Vec<String>, ttl_s: u64) -> Result<Self, TurnConfigError> {
        if secrets.is_empty() || secrets.len() > MAX_TURN_SECRETS {
            return Err(TurnConfigError::SecretCount(secrets.len()));
        }
        if secrets.iter().any(|s| s.len() < MIN_TURN_SECRET_BYTES) {
            return Err(TurnConfigError::ShortSecret);
        }
        if urls.is_empty() || urls.iter().any(|u| !(u.starts_with("turn:") || u.starts_with("turns:"))) {
            return Err(TurnConfigError::Urls);
        }
        if ttl_s == 0 || ttl_s > MAX_TURN_TTL_S {
            return Err(TurnConfigError::Lifetime(ttl_s));
        }
        Ok(Self { secrets, urls, ttl_s })
    }

    /// Credentials for `participant`, valid from `now_unix_s` for the
    /// configured lifetime or `requested_ttl_s` if shorter (never longer).
    pub fn issue(&self, participant: &str, now_unix_s: u64, requested_ttl_s: Option<u64>) -> TurnCredential {
        let ttl_s = requested_ttl_s.map_or(self.ttl_s, |r| r.clamp(1, self.ttl_s));
        let expires_unix_s = now_unix_s.saturating_add(ttl_s);
        let username = format!("{expires_unix_s}:{participant}");
        let password = password(&self.secrets[0], &username);
        TurnCredential { username, password, ttl_s, expires_unix_s }
    }

    /// The `RTCIceServer` entry for a credential.
    pub fn ice_server(&self, credential: &TurnCredential) -> IceServer {
        IceServer {
            urls: self.urls.clone(),
            username: Some(credential.username.clone()),
            credential: Some(credential.password.clone()),
        }
    }

    /// Checks credentials as coturn does, against every accepted secret.
    pub fn check(&self, username: &str, password_given: &str, now_unix_s: u64) -> Result<(), CredentialProblem> {
        let expiry: u64 =
            username.split_once(':').and_then(|(e, _)| e.parse().ok()).ok_or(CredentialProblem::Malformed)?;
        if !self.secrets.iter().any(|s| password(s, username) == password_given) {
            return Err(CredentialProblem::WrongPassword);
        }
        if expiry < now_unix_s {
            return Err(CredentialProblem::Expired);
        }
        Ok(())
    }
}

/// base64(HMAC-SHA1(secret, username)): the password coturn expects (one
/// definition, in the protocol crate, shared with the peer's `turn-check`).
pub use switchboard_protocol::turn_password::password;

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ttl_s: u64) -> TurnConfig {
        TurnConfig::new(
            vec!["current-secret-0123456789".into(), "previous-secret-0123456789".into()],
            vec!["turn:127.0.0.1:3479?transport=udp".into()],
            ttl_s,
        )
        .unwrap()
    }

    #[test]
    fn password_matches_the_turn_rest_api_reference() {
        // RFC 2202 test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?").
        assert_eq!(password("Jefe", "what do ya want for nothing?"), "7/zfauXrL6LSdBbV8YTfnCWafHk=");
    }

    #[test]
    fn issues_with_the_current_secret_and_caps_the_lifetime() {
        let c = config(600);
        let cred = c.issue("pABC", 1_000, None);
        assert_eq!(cred.username, "1600:pABC");
        assert_eq!(cred.password, password("current-secret-0123456789", "1600:pABC"));
        assert_eq!(c.issue("pABC", 1_000, Some(60)).ttl_s, 60);
        assert_eq!(c.issue("pABC", 1_000, Some(10_000_000)).ttl_s, 600, "never above the configured lifetime");
        assert_eq!(c.issue("pABC", 1_000, Some(0)).ttl_s, 1);
        assert!(TurnConfig::new(vec!["0123456789abcdef".into()], vec!["turn:x".into()], MAX_TURN_TTL_S + 1).is_err());
    }

    #[test]
    fn checks_both_secrets_and_expiry() {
        let c = config(600);
        let cred = c.issue("pABC", 1_000, None);
        assert_eq!(c.check(&cred.username, &cred.password, 1_500), Ok(()));
        assert_eq!(c.check(&cred.username, &cred.password, 1_601), Err(CredentialProblem::Expired));
        let old = password("previous-secret-0123456789", &cred.username);
        assert_eq!(c.check(&cred.username, &old, 1_500), Ok(()), "the previous secret still works");
        let forged = password("some-other-secret-0123456789", &cred.username);
        assert_eq!(c.check(&cred.username, &forged, 1_500), Err(CredentialProblem::WrongPassword));
        assert_eq!(c.check("nocolon", &cred.password, 1_500), Err(CredentialProblem::Malformed));
    }

    #[test]
    fn refuses_bad_configurations() {
        let urls = vec!["turn:h:3478".to_string()];
        assert_eq!(
            TurnConfig::new(vec![], urls.clone(), 60).unwrap_err().to_string(),
            "TURN needs 1 or 2 secrets (current first), got 0"
        );
        assert_eq!(
            TurnConfig::new(vec!["0123456789abcdef".into()], urls.clone(), 0).unwrap_err().to_string(),
            "the TURN credential lifetime must be 1 to 86400 s, got 0"
        );
        assert!(TurnConfig::new(vec!["short".into()], urls.clone(), 60).is_err());
        assert!(TurnConfig::new(vec!["0123456789abcdef".into(); 3], urls.clone(), 60).is_err());
        assert!(TurnConfig::new(vec!["0123456789abcdef".into()], vec!["stun:h".into()], 60).is_err());
        assert!(TurnConfig::new(vec!["0123456789abcdef".into()], urls, 0).is_err());
    }
}
