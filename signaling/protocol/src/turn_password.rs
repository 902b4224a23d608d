//! The TURN REST credential scheme coturn implements (`use-auth-secret`):
//! the username is `<expiry unix seconds>:<identity>` and the password is
//! base64(HMAC-SHA1(secret, username)). The server mints `ice_servers`
//! entries with it; `switchboard-peer turn-check` checks a secret with it.

use base64::Engine as _;
use hmac::{Hmac, Mac};

/// base64(HMAC-SHA1(secret, username)): the password coturn expects.
pub fn password(secret: &str, username: &str) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail here.
    let mut mac =
        <Hmac<sha1::Sha1>>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!("any key size"));
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_openssl() {
        // printf '1700000000:ada' | openssl dgst -sha1 -hmac secret -binary | base64
        assert_eq!(password("secret", "1700000000:ada"), "lV8v9c9TsajfLXLkZIc5nnmtEng=");
    }
}
