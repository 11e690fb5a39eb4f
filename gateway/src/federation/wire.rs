//! What crosses between gateways, in one place. `docs/protocol.md` is the prose of this file.

use meshfed_discovery::ServiceKey;

/// The ALPN protocol of the federation QUIC connection: HTTP/3.
pub const ALPN: &[u8] = b"h3";

/// The largest header section either side accepts (SETTINGS_MAX_FIELD_SECTION_SIZE).
pub const MAX_FIELD_SECTION_SIZE: u64 = 16 * 1024;

/// Requests name services by their MCS name in this zone on the wire, whatever DNS zone each
/// cluster serves locally, so that peers need not agree on local DNS configuration.
const WIRE_SUFFIX: &str = ".svc.clusterset.local";

/// The `:authority` of a request for `service`: `<svc>.<ns>.svc.clusterset.local`.
pub fn authority(service: &ServiceKey) -> String {
    format!("{service}{WIRE_SUFFIX}")
}

/// The service an `:authority` names, if it is a well-formed wire authority.
pub fn service_of(authority: &str) -> Option<ServiceKey> {
    let host = authority.to_ascii_lowercase();
    host.strip_suffix(WIRE_SUFFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_round_trips() {
        let service: ServiceKey = "checkout.shop".parse().expect("key");
        let authority = authority(&service);
        assert_eq!(authority, "checkout.shop.svc.clusterset.local");
        assert_eq!(service_of(&authority), Some(service.clone()));
        assert_eq!(
            service_of("CHECKOUT.shop.svc.clusterset.local"),
            Some(service)
        );
        for bad in [
            "checkout.shop",
            "a.b.c.svc.clusterset.local",
            "shop.svc.clusterset.local",
            "",
        ] {
            assert_eq!(service_of(bad), None, "{bad}");
        }
    }
}
