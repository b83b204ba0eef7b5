//! How a failed command's error is printed: its chain of causes joined with ": ", as anyhow's `{:#}`
//! does, except that a cause whose text the previous message already contains is left out. Many of our
//! errors name their source in their own message (`cannot open metadata database {path}: {source}`) and
//! also return it from `source()`, so `{:#}` would print that cause twice.

/// The error and its causes on one line, each cause once.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    let mut previous = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !previous.is_empty() && previous.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
        previous = text;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Like `MetaError::Open`: the source in the message and from `source()`.
    #[derive(Debug)]
    struct Open {
        source: std::io::Error,
    }

    impl std::fmt::Display for Open {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot open metadata database /r/meta.redb: {}", self.source)
        }
    }

    impl std::error::Error for Open {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let inner = std::io::Error::other("Database already open. Cannot acquire lock.");
        let err = anyhow::Error::new(Open { source: inner }).context("opening state root /r");
        assert_eq!(
            error_line(&err),
            "opening state root /r: cannot open metadata database /r/meta.redb: Database already open. Cannot acquire lock."
        );
        // anyhow's own rendering repeats it; that is what this printer is for.
        assert!(format!("{err:#}").ends_with("lock.: Database already open. Cannot acquire lock."));
    }

    #[test]
    fn distinct_causes_are_all_printed() {
        let err = anyhow::anyhow!("reading Dockerfile").context("building .");
        assert_eq!(error_line(&err), "building .: reading Dockerfile");
        let err = anyhow::Error::new(std::io::Error::other("disk full")).context("writing layer");
        assert_eq!(error_line(&err), "writing layer: disk full");
    }
}
