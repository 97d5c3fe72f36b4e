//! The timestamp of the gateway's log lines: the same RFC 3339 form in UTC
//! as tracing-subscriber's default timer (`2026-11-30T18:16:19.123456Z`),
//! but the part up to the second is formatted once per second and thread
//! and kept; each line then costs a clock read and six digits.
//!
//! The default timer formats every field of the date anew for every line:
//! with one access log line per proxied request that was a quarter of the
//! line's cost, 2,400 instructions per request (docs/BENCHMARKS.md,
//! "Proxy on hyper directly (issue 13)").

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// The log timer; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct SecondCachedTime;

thread_local! {
    /// The second last formatted on this thread, and its text up to the `.`.
    static LAST: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl FormatTime for SecondCachedTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut micros = now.subsec_micros();
        let mut digits = [b'0'; 6];
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        let digits = std::str::from_utf8(&digits).map_err(|_| fmt::Error)?;
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            if last.0 != now.as_secs() {
                last.1.clear();
                write_up_to_second(&mut last.1, now.as_secs());
                last.0 = now.as_secs();
            }
            w.write_str(&last.1)?;
            w.write_str(digits)?;
            w.write_char('Z')
        })
    }
}

/// `YYYY-MM-DDTHH:MM:SS.` for a Unix time in seconds.
fn write_up_to_second(out: &mut String, secs: u64) {
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
}

/// Year, month and day of a day count since 1970-01-01 (the proleptic
/// Gregorian calendar; H. Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_rfc_3339() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00."),
            (951_782_400, "2000-02-29T00:00:00."),
            (1_709_164_799, "2024-02-28T23:59:59."),
            (1_709_251_199, "2024-02-29T23:59:59."),
            (1_735_689_599, "2024-12-31T23:59:59."),
            (1_764_527_779, "2025-11-30T18:36:19."),
            (4_102_444_800, "2100-01-01T00:00:00."),
        ] {
            let mut out = String::new();
            write_up_to_second(&mut out, secs);
            assert_eq!(out, text, "{secs}");
        }
    }

    #[test]
    fn a_line_gets_microseconds_and_a_zone() {
        let mut out = String::new();
        SecondCachedTime
            .format_time(&mut Writer::new(&mut out))
            .unwrap();
        assert_eq!(out.len(), "2026-11-30T18:16:19.123456Z".len(), "{out}");
        assert!(out.ends_with('Z') && out.as_bytes()[19] == b'.', "{out}");
    }
}
