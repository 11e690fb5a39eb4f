//! What crosses between gateways, in one place. `docs/protocol.md` is the prose of this file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use meshfed_discovery::ServiceKey;

/// The ALPN protocol of the federation QUIC connection: HTTP/3.
pub const ALPN: &[u8] = b"h3";

/// The largest header section either side accepts (SETTINGS_MAX_FIELD_SECTION_SIZE).
pub const MAX_FIELD_SECTION_SIZE: u64 = 16 * 1024;

/// The request header in which a gateway tells its peer which of the service's endpoints may
/// serve the request: a subset's labels as `key=value` pairs joined by `,`. Set only by a
/// gateway (clients' `x-meshfed-*` headers are removed), read only from a verified peer.
pub const ENDPOINT_LABELS: &str = "x-meshfed-endpoint-labels";

/// The request header in which a gateway asserts, to a peer, the SPIFFE ID of the local client
/// it forwards for (from the policy's `origins`). The receiving gateway authorizes the request
/// as that ID only if it is in the sending gateway's own trust domain, and refuses it otherwise.
pub const ORIGIN: &str = "x-meshfed-origin";

/// A label selector in its [`ENDPOINT_LABELS`] form.
pub fn format_labels(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

/// A label selector from its [`ENDPOINT_LABELS`] form, if well formed.
pub fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    text.split(',')
        .map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (!k.is_empty() && !v.is_empty()).then(|| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Requests name services by their MCS name in this zone on the wire, whatever DNS zone each
/// cluster serves locally, so that peers need not agree on local DNS configuration.
const WIRE_SUFFIX: &str = ".svc.clusterset.local";

/// The `:authority` of a request for `service`: `<svc>.<ns>.svc.clusterset.local`, with the
/// service port when the request names one (always, for a `CONNECT`).
pub fn authority(service: &ServiceKey, port: Option<u16>) -> String {
    // Sized once (`format!` grows its string a few times): this runs for every request.
    let mut authority = String::with_capacity(AUTHORITY_CAPACITY);
    let _ = match port {
        Some(port) => write!(authority, "{service}{WIRE_SUFFIX}:{port}"),
        None => write!(authority, "{service}{WIRE_SUFFIX}"),
    };
    authority
}

/// Room for the wire name of a service with labels of common length, and a port.
const AUTHORITY_CAPACITY: usize = 96;

/// The service an `:authority` names, and the port if it has one, if it is a well-formed wire
/// authority.
pub fn service_of(authority: &str) -> Option<(ServiceKey, Option<u16>)> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port.parse::<u16>().ok().filter(|p| *p != 0)?)),
        None => (authority, None),
    };
    let host = crate::route::lowercase(host);
    let service = host.strip_suffix(WIRE_SUFFIX)?.parse().ok()?;
    Some((service, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_round_trips() {
        let service: ServiceKey = "checkout.shop".parse().expect("key");
        let bare = authority(&service, None);
        assert_eq!(bare, "checkout.shop.svc.clusterset.local");
        assert_eq!(service_of(&bare), Some((service.clone(), None)));
        let with_port = authority(&service, Some(5432));
        assert_eq!(with_port, "checkout.shop.svc.clusterset.local:5432");
        assert_eq!(service_of(&with_port), Some((service.clone(), Some(5432))));
        assert_eq!(
            service_of("CHECKOUT.shop.svc.clusterset.local"),
            Some((service, None))
        );
        for bad in [
            "checkout.shop",
            "a.b.c.svc.clusterset.local",
            "shop.svc.clusterset.local",
            "checkout.shop.svc.clusterset.local:0",
            "checkout.shop.svc.clusterset.local:http",
            "checkout.shop.svc.clusterset.local:70000",
            "",
        ] {
            assert_eq!(service_of(bad), None, "{bad}");
        }
    }
}
