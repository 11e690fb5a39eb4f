//! Header changes a route makes to requests or responses.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Changes applied in this order: `remove`, then `set` (replacing any value), then `add`
/// (appending to any value).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderChanges {
    /// Headers replaced or created.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Headers appended.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Headers removed.
    pub remove: Vec<HeaderName>,
}

impl HeaderChanges {
    /// Whether this changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies the changes to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// Why a header may not be changed by policy, if it may not: connection-level headers belong
/// to each hop, framing headers to the body, `Host` to routing, and `x-meshfed-*` and
/// `x-forwarded-client-cert` to what the gateways verified.
pub fn protected(name: &HeaderName) -> Option<&'static str> {
    const HOP: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "upgrade",
        "trailer",
        "content-length",
    ];
    let name = name.as_str();
    if HOP.contains(&name) {
        return Some("it belongs to the connection or the body's framing");
    }
    if name == "host" {
        return Some("the gateway routes on it");
    }
    if name.starts_with("x-meshfed-") || name == "x-forwarded-client-cert" {
        return Some("only the gateways set it, from what they verified");
    }
    None
}
