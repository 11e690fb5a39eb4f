//! Header hygiene at every hop.

use std::fmt::Write as _;

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1), and may
/// never cross a hop. HTTP/3 forbids them outright.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

/// Removes hop-by-hop headers, including any named in `Connection`. `TE: trailers` survives:
/// gRPC needs it end to end, and HTTP/2 and HTTP/3 allow it.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none: one pass over the names instead of a lookup for each.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // `keep-alive`, the usual one, goes below anyway: not made a name for each message.
        .filter(|name| {
            !HOP_BY_HOP
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h.as_str()))
        })
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes identity and control headers a client may not set for itself: the gateway sets
/// them only from what it verified.
pub(crate) fn strip_untrusted(headers: &mut HeaderMap) {
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            name.as_str().starts_with("x-meshfed-") || name.as_str() == "x-forwarded-client-cert"
        })
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
}

/// Room for `URI=` and a SPIFFE ID of common length.
const ID_CAPACITY: usize = 128;

/// Tells the endpoint who the verified caller is, in Envoy's `x-forwarded-client-cert` form
/// (`URI=<SPIFFE ID>`), which mesh-aware applications already read. Call after
/// [`strip_untrusted`], so that this is the only one.
pub(crate) fn set_client_identity(headers: &mut HeaderMap, id: &meshfed_trust::SpiffeId) {
    // A SPIFFE ID has only URI-safe characters, none of which XFCC must quote. Made in one
    // allocation (`format!` grows its string a few times): this runs for every request.
    let mut value = String::with_capacity(ID_CAPACITY);
    let _ = write!(value, "URI={id}");
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        headers.insert("x-forwarded-client-cert", value);
    }
}

/// The size of a request's header section as HTTP/3 counts it against
/// `SETTINGS_MAX_FIELD_SECTION_SIZE` (RFC 9114 section 4.2.2): each field's name and value
/// plus 32 bytes, pseudo-header fields included.
pub(crate) fn section_size(request: &http::request::Parts) -> u64 {
    let field = |name: usize, value: usize| (name + value + 32) as u64;
    let uri = &request.uri;
    let pseudo = field(7, request.method.as_str().len())
        + field(5, uri.path_and_query().map_or(1, |p| p.as_str().len()))
        + field(10, uri.authority().map_or(0, |a| a.as_str().len()))
        + field(7, 5);
    request
        .headers
        .iter()
        .map(|(name, value)| field(name.as_str().len(), value.len()))
        .sum::<u64>()
        + pseudo
}

/// This gateway's `Via` entries, one per protocol it receives, made once: every forwarding
/// intermediary appends itself to `Via` (RFC 9110 section 7.6.3).
#[derive(Debug)]
pub(crate) struct Via {
    /// For HTTP/1.0, 1.1, 2 and 3, in that order.
    values: [Option<HeaderValue>; 4],
}

impl Via {
    /// The entries for a gateway called `pseudonym`.
    pub(crate) fn new(pseudonym: &str) -> Via {
        let value = |protocol: &str| HeaderValue::from_str(&format!("{protocol} {pseudonym}")).ok();
        Via {
            values: [value("1.0"), value("1.1"), value("2"), value("3")],
        }
    }

    /// Appends this gateway to `headers`' `Via`, for a message `received` in that version.
    pub(crate) fn append(&self, headers: &mut HeaderMap, received: Version) {
        let index = match received {
            Version::HTTP_10 => 0,
            Version::HTTP_2 => 2,
            Version::HTTP_3 => 3,
            _ => 1,
        };
        if let Some(value) = &self.values[index] {
            headers.append(header::VIA, value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_te_trailers_stays() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "secret"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("content-type", "text/plain"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "te"]);
    }

    #[test]
    fn forged_identity_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert("x-meshfed-source-cluster", HeaderValue::from_static("west"));
        headers.insert("x-forwarded-client-cert", HeaderValue::from_static("By=x"));
        headers.insert("x-request-id", HeaderValue::from_static("1"));
        strip_untrusted(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-request-id"));
    }

    #[test]
    fn section_size_counts_fields_and_pseudo_fields_as_http3_does() {
        let request = http::Request::get("/")
            .header("host", "a.b")
            .body(())
            .expect("request");
        // :method GET (7+3+32), :path / (5+1+32), :authority none (10+0+32), :scheme (7+5+32),
        // host a.b (4+3+32).
        assert_eq!(
            section_size(&request.into_parts().0),
            42 + 38 + 42 + 44 + 39
        );
    }

    #[test]
    fn via_names_the_protocol_received() {
        let mut headers = HeaderMap::new();
        Via::new("meshfed-east").append(&mut headers, Version::HTTP_11);
        Via::new("meshfed-west").append(&mut headers, Version::HTTP_3);
        let via: Vec<&str> = headers
            .get_all(header::VIA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(via, ["1.1 meshfed-east", "3 meshfed-west"]);
    }
}
