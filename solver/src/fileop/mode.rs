//! Symbolic `--chmod` modes (`u+x`, `go-w`, `a=rX`, `u=g`), applied to each file's own mode as chmod(1)
//! does; an empty "who" means all classes.

use super::FileOpError;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    who: u32,
    ops: Vec<(u8, Perm)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Perm {
    Bits { bits: u32, cond_x: bool },
    Copy(u8),
}

/// A parsed symbolic mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeSet {
    clauses: Vec<Clause>,
}

const USER: u32 = 0o4700;
const GROUP: u32 = 0o2070;
const OTHER: u32 = 0o1007;

impl ModeSet {
    /// Parses a comma-separated list of `[ugoa]*[+-=][rwxXst]*|[ugo]` clauses.
    pub fn parse(s: &str) -> Result<ModeSet, FileOpError> {
        let bad =
            || FileOpError::Invalid(format!("invalid --chmod mode {s:?}: use octal (0755) or symbolic (u+x,g-w)"));
        let mut clauses = Vec::new();
        for part in s.split(',') {
            let b = part.as_bytes();
            let mut i = 0;
            let mut who = 0;
            while i < b.len() && b"ugoa".contains(&b[i]) {
                who |= match b[i] {
                    b'u' => USER,
                    b'g' => GROUP,
                    b'o' => OTHER,
                    _ => USER | GROUP | OTHER,
                };
                i += 1;
            }
            if who == 0 {
                who = USER | GROUP | OTHER;
            }
            let mut ops = Vec::new();
            while i < b.len() {
                let op = b[i];
                if !b"+-=".contains(&op) {
                    return Err(bad());
                }
                i += 1;
                if i < b.len() && b"ugo".contains(&b[i]) {
                    ops.push((op, Perm::Copy(b[i])));
                    i += 1;
                    continue;
                }
                let (mut bits, mut cond_x) = (0, false);
                while i < b.len() && b"rwxXst".contains(&b[i]) {
                    match b[i] {
                        b'r' => bits |= 0o444,
                        b'w' => bits |= 0o222,
                        b'x' => bits |= 0o111,
                        b'X' => cond_x = true,
                        b's' => bits |= 0o6000,
                        _ => bits |= 0o1000,
                    }
                    i += 1;
                }
                ops.push((op, Perm::Bits { bits, cond_x }));
            }
            if ops.is_empty() {
                return Err(bad());
            }
            clauses.push(Clause { who, ops });
        }
        Ok(ModeSet { clauses })
    }

    /// The permission bits (with setuid/setgid/sticky) after applying the set to `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let mut m = mode & 0o7777;
        for c in &self.clauses {
            for (op, perm) in &c.ops {
                let bits = match perm {
                    Perm::Bits { bits, cond_x } => {
                        let x = if *cond_x && (is_dir || m & 0o111 != 0) { 0o111 } else { 0 };
                        (bits | x) & c.who
                    }
                    Perm::Copy(from) => {
                        let v = match from {
                            b'u' => (m >> 6) & 7,
                            b'g' => (m >> 3) & 7,
                            _ => m & 7,
                        };
                        (v << 6 | v << 3 | v) & c.who
                    }
                };
                match op {
                    b'+' => m |= bits,
                    b'-' => m &= !bits,
                    _ => {
                        // `=` clears the class's rwx (and its special bit, for u and g), then sets.
                        m = (m & !c.who) | bits;
                    }
                }
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolic_modes() {
        let ap = |s: &str, m: u32, d: bool| ModeSet::parse(s).unwrap().apply(m, d);
        assert_eq!(ap("u+x", 0o644, false), 0o744);
        assert_eq!(ap("go-w", 0o666, false), 0o644);
        assert_eq!(ap("a=rX", 0o700, true), 0o555);
        assert_eq!(ap("a=rX", 0o600, false), 0o444);
        assert_eq!(ap("+x", 0o644, false), 0o755);
        assert_eq!(ap("u+s,+t", 0o755, true), 0o5755);
        assert_eq!(ap("g=u", 0o740, false), 0o770);
        assert_eq!(ap("u=rw,g=r,o=", 0o777, false), 0o640);
        assert!(ModeSet::parse("u*x").is_err());
        assert!(ModeSet::parse("u").is_err());
    }
}
