//! The one place the server reads the clock for the core.

use std::time::{Instant, SystemTime, UNIX_EPOCH};
use switchboard_core::Now;

/// The current monotonic and wall-clock time.
pub fn now() -> Now {
    let unix_ms =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Now { mono: Instant::now(), unix_ms }
}
