//! SPIFFE IDs and trust domain names, as the SPIFFE ID specification defines them.
//!
//! A value of these types is always valid: parsing is the only way in, so nothing downstream
//! re-checks. The rules are those of the SPIFFE-ID standard, section 2:
//!
//! - `spiffe://` scheme, lower case, then a trust domain of `[a-z0-9.-_]`, at most 255 bytes;
//! - an optional path of `/`-separated segments of `[a-zA-Z0-9.-_]`, no empty, `.` or `..`
//!   segment, no trailing `/`, no percent-encoding, no query or fragment;
//! - at most 2048 bytes in all.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

const SCHEME: &str = "spiffe://";
const MAX_TRUST_DOMAIN_LEN: usize = 255;
const MAX_ID_LEN: usize = 2048;

/// The name of a trust domain, such as `east.example`. Reference-counted, as [`SpiffeId`]'s
/// parts are: the gateway clones both for every request it authorizes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(Arc<str>);

/// A SPIFFE ID: a trust domain and a path within it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    /// Empty, or starting with `/`.
    path: Arc<str>,
}

/// Why a string is not a valid trust domain or SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The string is empty.
    #[error("is empty")]
    Empty,
    /// A SPIFFE ID must start with `spiffe://` (lower case).
    #[error("must start with `spiffe://`")]
    Scheme,
    /// The trust domain part is empty.
    #[error("trust domain is empty")]
    EmptyTrustDomain,
    /// The trust domain is longer than 255 bytes.
    #[error("trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong,
    /// The trust domain has a character outside `[a-z0-9.-_]`.
    #[error(
        "trust domain has {0:?}; only lower-case letters, digits, `.`, `-` and `_` are allowed"
    )]
    TrustDomainChar(char),
    /// The ID is longer than 2048 bytes.
    #[error("is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    /// A path segment is empty (`//` or a trailing `/`).
    #[error("path has an empty segment (`//` or a trailing `/`)")]
    EmptySegment,
    /// A path segment is `.` or `..`.
    #[error("path has a `.` or `..` segment")]
    DotSegment,
    /// The path has a character outside `[a-zA-Z0-9.-_]` (this includes `%`, `?` and `#`).
    #[error("path has {0:?}; only letters, digits, `.`, `-` and `_` are allowed in a segment")]
    PathChar(char),
}

// === impl TrustDomain ===

impl TrustDomain {
    /// The trust domain's name, without scheme.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of this trust domain itself (`spiffe://<td>`), with an empty path.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            trust_domain: self.clone(),
            path: Arc::from(""),
        }
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Accept `spiffe://td` as well, as the specification allows.
        let s = s.strip_prefix(SCHEME).unwrap_or(s);
        if s.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain);
        }
        if s.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(SpiffeIdError::TrustDomainTooLong);
        }
        if let Some(c) = s.chars().find(|c| !is_trust_domain_char(*c)) {
            return Err(SpiffeIdError::TrustDomainChar(c));
        }
        Ok(TrustDomain(Arc::from(s)))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl SpiffeId ===

impl SpiffeId {
    /// Builds `spiffe://<trust_domain>/<segments joined by />`, checking each segment.
    pub fn new<'a>(
        trust_domain: TrustDomain,
        segments: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, SpiffeIdError> {
        let mut path = String::new();
        for segment in segments {
            check_segment(segment)?;
            path.push('/');
            path.push_str(segment);
        }
        let id = SpiffeId {
            trust_domain,
            path: path.into(),
        };
        if id.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        Ok(id)
    }

    /// The trust domain this ID belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn len(&self) -> usize {
        SCHEME.len() + self.trust_domain.0.len() + self.path.len()
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::Scheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let trust_domain = td.parse::<TrustDomain>()?;
        check_path(path)?;
        Ok(SpiffeId {
            trust_domain,
            path: Arc::from(path),
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}{}", self.trust_domain, self.path)
    }
}

fn is_trust_domain_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_')
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// Checks a path that is empty or starts with `/`.
fn check_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    path[1..].split('/').try_for_each(check_segment)
}

fn check_segment(segment: &str) -> Result<(), SpiffeIdError> {
    match segment {
        "" => return Err(SpiffeIdError::EmptySegment),
        "." | ".." => return Err(SpiffeIdError::DotSegment),
        _ => {}
    }
    match segment.chars().find(|c| !is_path_char(*c)) {
        Some(c) => Err(SpiffeIdError::PathChar(c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_round_trip() {
        for s in [
            "spiffe://east.example",
            "spiffe://east.example/meshfed/gateway/gw-1",
            "spiffe://a_b-c.d/ns/Shop/sa/check_out.v2",
        ] {
            let id: SpiffeId = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(id.to_string(), s);
        }
    }

    #[test]
    fn invalid_ids_are_rejected_with_the_reason() {
        use SpiffeIdError::*;
        let long_td = format!("spiffe://{}", "a".repeat(256));
        let long_id = format!("spiffe://td/{}", "a".repeat(2040));
        let cases: &[(&str, SpiffeIdError)] = &[
            ("", Empty),
            ("http://east.example/x", Scheme),
            ("SPIFFE://east.example/x", Scheme),
            ("spiffe://", EmptyTrustDomain),
            ("spiffe:///path", EmptyTrustDomain),
            ("spiffe://East.example/x", TrustDomainChar('E')),
            ("spiffe://east.example:8443/x", TrustDomainChar(':')),
            ("spiffe://user@east.example/x", TrustDomainChar('@')),
            (&long_td, TrustDomainTooLong),
            (&long_id, TooLong),
            ("spiffe://td/", EmptySegment),
            ("spiffe://td/a//b", EmptySegment),
            ("spiffe://td/a/./b", DotSegment),
            ("spiffe://td/a/..", DotSegment),
            ("spiffe://td/a%20b", PathChar('%')),
            ("spiffe://td/a?x=1", PathChar('?')),
            ("spiffe://td/a#frag", PathChar('#')),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<SpiffeId>().as_ref(), Err(want), "{input}");
        }
    }

    #[test]
    fn built_ids_check_segments() {
        let td: TrustDomain = "west.example".parse().expect("valid");
        let id = SpiffeId::new(td.clone(), ["meshfed", "gateway", "gw"]).expect("valid");
        assert_eq!(id.to_string(), "spiffe://west.example/meshfed/gateway/gw");
        assert_eq!(id.trust_domain(), &td);
        assert_eq!(
            SpiffeId::new(td.clone(), ["meshfed", "a/b"]),
            Err(SpiffeIdError::PathChar('/'))
        );
        assert_eq!(SpiffeId::new(td, [".."]), Err(SpiffeIdError::DotSegment));
    }

    #[test]
    fn trust_domain_accepts_spiffe_prefix() {
        let td: TrustDomain = "spiffe://east.example".parse().expect("valid");
        assert_eq!(td.as_str(), "east.example");
        assert_eq!(td.id().to_string(), "spiffe://east.example");
    }
}
