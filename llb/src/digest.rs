//! `sha256:<64 lowercase hex>` content digests.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A validated sha256 content digest. It cannot hold anything but `sha256:` followed by 64 lowercase
/// hex digits, so `Display` is always a valid OCI digest string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

/// Why a string is not a [`Digest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("unsupported digest algorithm in {0:?} (only sha256 is supported)")]
    Algorithm(String),
    #[error("digest {0:?} must have 64 lowercase hex digits after \"sha256:\"")]
    Encoded(String),
}

impl Digest {
    /// The sha256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// The raw 32 hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex digits without the algorithm prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, as Docker shows image ids.
    pub fn short(&self) -> String {
        let mut h = self.hex();
        h.truncate(12);
        h
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(encoded) = s.strip_prefix("sha256:") else {
            return Err(DigestError::Algorithm(s.to_string()));
        };
        // hex::decode accepts upper case; the OCI grammar for sha256 does not.
        let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if encoded.len() != 64 || !encoded.as_bytes().iter().all(lower_hex) {
            return Err(DigestError::Encoded(s.to_string()));
        }
        let mut raw = [0u8; 32];
        hex::decode_to_slice(encoded, &mut raw).map_err(|_| DigestError::Encoded(s.to_string()))?;
        Ok(Digest(raw))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_empty_is_the_well_known_value() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_round_trips_and_rejects_bad_input() {
        let d = Digest::of(b"hello");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert_eq!(d.short().len(), 12);
        let upper = d.to_string().to_uppercase().replace("SHA256", "sha256");
        assert!(matches!(upper.parse::<Digest>(), Err(DigestError::Encoded(_))));
        assert!(matches!("sha512:00".parse::<Digest>(), Err(DigestError::Algorithm(_))));
        assert!(matches!("sha256:abc".parse::<Digest>(), Err(DigestError::Encoded(_))));
        let g = format!("sha256:{}", "g".repeat(64));
        assert!(g.parse::<Digest>().is_err());
    }

    #[test]
    fn serde_is_a_string() {
        let d = Digest::of(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }
}
