//! The `bundle_endpoint` keys: serving our bundle, and fetching each peer's.

use std::path::Path;
use std::time::Duration;

use meshfed_discovery::Label;
use meshfed_trust::{SpiffeId, TrustDomain};

use super::raw::{RawBundleEndpoint, RawPeerBundleEndpoint};
use super::validate::Checker;
use super::{BundleEndpoint, FetchProfile, PeerBundleEndpoint, ServeProfile, duration};

/// The refresh hint we advertise unless told otherwise (the SPIFFE specification suggests
/// five minutes as a default for clients).
const DEFAULT_REFRESH_HINT: Duration = Duration::from_secs(300);

impl Checker {
    pub(super) fn bundle_endpoint(
        &mut self,
        raw: &RawBundleEndpoint,
        base: &Path,
    ) -> Option<BundleEndpoint> {
        let at = "bundle_endpoint";
        let refresh_hint = self.optional(
            &format!("{at}.refresh_hint"),
            raw.refresh_hint.as_ref(),
            DEFAULT_REFRESH_HINT,
            |s| {
                let hint = duration::parse(s)?;
                if hint < Duration::from_secs(1) {
                    return Err("must be at least 1s".into());
                }
                Ok(hint)
            },
        );
        let profile = self.required(
            &format!("{at}.profile"),
            raw.profile.as_ref(),
            parse_profile,
        )?;
        let file = |c: &mut Self, key: &str, text| {
            c.required(&format!("{at}.{key}"), text, |s| Ok(base.join(s)))
        };
        let profile = if profile == "https_web" {
            let cert = file(self, "cert", raw.cert.as_ref());
            let key = file(self, "key", raw.key.as_ref());
            ServeProfile::HttpsWeb {
                cert: cert?,
                key: key?,
            }
        } else {
            for (key, text) in [("cert", &raw.cert), ("key", &raw.key)] {
                if let Some(text) = text {
                    self.invalid(
                        &format!("{at}.{key}"),
                        text,
                        "applies only to https_web: https_spiffe serves with the gateway's SVID",
                    );
                }
            }
            ServeProfile::HttpsSpiffe
        };
        Some(BundleEndpoint {
            profile,
            refresh_hint: refresh_hint?,
        })
    }

    pub(super) fn peer_bundle_endpoint(
        &mut self,
        at: &str,
        raw: &RawPeerBundleEndpoint,
        peer: Option<(&Label, &TrustDomain)>,
        base: &Path,
    ) -> Option<PeerBundleEndpoint> {
        let url = self.required(&format!("{at}.url"), raw.url.as_ref(), parse_url);
        let profile = self.required(
            &format!("{at}.profile"),
            raw.profile.as_ref(),
            parse_profile,
        );
        let profile = match profile?.as_str() {
            "https_web" => {
                if let Some(text) = &raw.endpoint_id {
                    self.invalid(
                        &format!("{at}.endpoint_id"),
                        text,
                        "applies only to https_spiffe",
                    );
                }
                let roots =
                    self.required(&format!("{at}.web_roots"), raw.web_roots.as_ref(), |s| {
                        Ok(base.join(s))
                    });
                FetchProfile::HttpsWeb { roots: roots? }
            }
            _ => {
                if let Some(text) = &raw.web_roots {
                    self.invalid(
                        &format!("{at}.web_roots"),
                        text,
                        "applies only to https_web",
                    );
                }
                let (name, trust_domain) = peer?;
                let default = crate::credentials::gateway_id_of(trust_domain, name);
                let endpoint_id = self.optional(
                    &format!("{at}.endpoint_id"),
                    raw.endpoint_id.as_ref(),
                    default,
                    |s| {
                        let id: SpiffeId =
                            s.parse().map_err(|e| format!("not a SPIFFE ID: {e}"))?;
                        if id.trust_domain() != trust_domain {
                            return Err(format!(
                                "must be in the peer's trust domain {trust_domain}"
                            ));
                        }
                        Ok(id)
                    },
                );
                FetchProfile::HttpsSpiffe {
                    endpoint_id: endpoint_id?,
                }
            }
        };
        Some(PeerBundleEndpoint { url: url?, profile })
    }
}

/// A bundle endpoint profile name, as the SPIFFE federation specification spells it.
fn parse_profile(s: &str) -> Result<String, String> {
    match s {
        "https_spiffe" | "https_web" => Ok(s.to_owned()),
        other => Err(format!(
            "unknown profile {other:?}; use https_spiffe or https_web"
        )),
    }
}

fn parse_url(s: &str) -> Result<http::Uri, String> {
    let url: http::Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme_str() != Some("https") {
        return Err("must be an https:// URL".into());
    }
    if url.host().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    Ok(url)
}
