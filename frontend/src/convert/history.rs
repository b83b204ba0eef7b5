//! History lines and other strings formatted the way BuildKit (Go's fmt) formats them, so
//! `docker history` of an rbuild image reads like one built by BuildKit.

use crate::shell::go_quote;

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `%v` of a `[]string`: `[a b]`.
pub fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `time.Duration.String()` for nanoseconds: `1m30s`, `500ms`, `0s`.
pub fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let body = if u < 1_000_000_000 {
        let (unit, div) = if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        format!("{}{unit}", trim_fraction(u, div))
    } else {
        let h = u / 3_600_000_000_000;
        let m = (u / 60_000_000_000) % 60;
        let s = trim_fraction(u % 60_000_000_000, 1_000_000_000);
        match (h, m) {
            (0, 0) => format!("{s}s"),
            (0, m) => format!("{m}m{s}s"),
            (h, m) => format!("{h}h{m}m{s}s"),
        }
    };
    if neg {
        format!("-{body}")
    } else {
        body
    }
}

fn trim_fraction(value: u64, div: u64) -> String {
    let whole = value / div;
    let frac = value % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(
            go_quote_list(&["/bin/sh".into(), "-c".into(), "echo hi".into()]),
            "[\"/bin/sh\" \"-c\" \"echo hi\"]"
        );
        assert_eq!(go_list(&["/data".into(), "/logs".into()]), "[/data /logs]");
    }

    #[test]
    fn durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(5_000_000), "5ms");
        assert_eq!(go_duration(1_500), "1.5µs");
    }
}
