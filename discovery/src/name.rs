//! Names that end up in DNS: cluster names, service names and namespaces.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// One DNS label as Kubernetes restricts it (RFC 1123): 1 to 63 of `[a-z0-9-]`, starting and
/// ending with a letter or digit. Cluster names, service names and namespaces are all labels,
/// because each becomes one label of a DNS name.
///
/// Shared, not owned: labels are cloned onto every request (its service, its clusters, its
/// metric labels), and a clone is a reference count, not an allocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(Arc<str>);

/// Why a string is not a DNS label.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// The label is empty.
    #[error("is empty")]
    Empty,
    /// The label is longer than 63 bytes.
    #[error("is longer than 63 characters")]
    TooLong,
    /// The label has a character other than a lower-case letter, digit or `-`.
    #[error("has {0:?}; only lower-case letters, digits and `-` are allowed")]
    Char(char),
    /// The label starts or ends with `-`.
    #[error("starts or ends with `-`")]
    Hyphen,
}

/// A service as the Multi-Cluster Services API names it: a name within a namespace. Namespace
/// sameness applies: `checkout.shop` is the same service in every cluster that exports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// The service's name.
    pub name: Label,
    /// The namespace it lives in.
    pub namespace: Label,
}

/// Why a string is not `<name>.<namespace>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceKeyError {
    /// There is no `.` between name and namespace, or more than one.
    #[error("expected `<name>.<namespace>`")]
    Shape,
    /// The name is not a DNS label.
    #[error("name {0}")]
    Name(LabelError),
    /// The namespace is not a DNS label.
    #[error("namespace {0}")]
    Namespace(LabelError),
}

// === impl Label ===

impl Label {
    /// A label from text the caller has built to the rules; checked again in debug builds.
    pub(crate) fn from_checked(text: String) -> Label {
        debug_assert!(text.parse::<Label>().is_ok(), "{text:?} is not a label");
        Label(text.into())
    }

    /// The label's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Label {
    type Err = LabelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(LabelError::Empty);
        }
        if s.len() > 63 {
            return Err(LabelError::TooLong);
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(LabelError::Char(c));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(LabelError::Hyphen);
        }
        Ok(Label(s.into()))
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl ServiceKey ===

impl FromStr for ServiceKey {
    type Err = ServiceKeyError;

    /// Parses `<name>.<namespace>`, the short form used in config.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((name, namespace)) = s.split_once('.') else {
            return Err(ServiceKeyError::Shape);
        };
        if namespace.contains('.') {
            return Err(ServiceKeyError::Shape);
        }
        Ok(ServiceKey {
            name: name.parse().map_err(ServiceKeyError::Name)?,
            namespace: namespace.parse().map_err(ServiceKeyError::Namespace)?,
        })
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["a", "east", "west-2", "0abc", &"a".repeat(63)] {
            assert!(ok.parse::<Label>().is_ok(), "{ok}");
        }
        let bad: &[(&str, LabelError)] = &[
            ("", LabelError::Empty),
            (&"a".repeat(64), LabelError::TooLong),
            ("East", LabelError::Char('E')),
            ("a.b", LabelError::Char('.')),
            ("a_b", LabelError::Char('_')),
            ("-a", LabelError::Hyphen),
            ("a-", LabelError::Hyphen),
        ];
        for (input, want) in bad {
            assert_eq!(input.parse::<Label>().as_ref(), Err(want), "{input}");
        }
    }

    #[test]
    fn service_keys() {
        let key: ServiceKey = "checkout.shop".parse().expect("valid");
        assert_eq!(key.name.as_str(), "checkout");
        assert_eq!(key.namespace.as_str(), "shop");
        assert_eq!(key.to_string(), "checkout.shop");
        assert_eq!(
            "checkout".parse::<ServiceKey>(),
            Err(ServiceKeyError::Shape)
        );
        assert_eq!("a.b.c".parse::<ServiceKey>(), Err(ServiceKeyError::Shape));
        assert_eq!(
            "Checkout.shop".parse::<ServiceKey>(),
            Err(ServiceKeyError::Name(LabelError::Char('C')))
        );
        assert_eq!(
            "checkout.".parse::<ServiceKey>(),
            Err(ServiceKeyError::Namespace(LabelError::Empty))
        );
    }
}
