//! HLS as every part of the system reads it (placeholder: filled by the shared playlist module).

use std::time::Duration;

/// RFC 8216 §6.3.4: after a change wait a target duration, after no change half of one.
pub fn reload_interval(target: Duration, changed: bool) -> Duration {
    if changed {
        target
    } else {
        target / 2
    }
}
