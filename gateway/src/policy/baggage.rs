//! The baggage override: a W3C `baggage` member that pins where one service goes, at every
//! gateway along a call chain whose applications propagate baggage (as they do trace context).
//!
//! The member's key is `meshfed.<service>.<namespace>`; its value is a cluster, or a cluster and
//! a subset of the service's (`west/v2`):
//!
//! ```text
//! baggage: userId=42,meshfed.greeter.demo=west/v2,meshfed.checkout.shop=east
//! ```
//!
//! Only the gateway decides whether to honour it (from trusted clients only); the header itself
//! is the applications' and passes on untouched.

use meshfed_discovery::{Label, ServiceKey};

use super::Pin;
use super::matching::percent_decode;

/// The prefix of a baggage key that pins a service.
pub const KEY_PREFIX: &str = "meshfed.";

/// A member for the service is there but does not name a cluster (and maybe a subset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the baggage member for the service is not `<cluster>` or `<cluster>/<subset>`")]
pub struct BadMember;

/// The pin for `service` in the `baggage` header values `values`, if a member names it. The
/// first member for the service wins. W3C baggage allows `;` properties after the value, and
/// percent-encoding in it; both are understood.
pub fn pin<'a>(
    values: impl IntoIterator<Item = &'a str>,
    service: &ServiceKey,
) -> Option<Result<Pin, BadMember>> {
    let key = format!("{KEY_PREFIX}{service}");
    let value = values
        .into_iter()
        .flat_map(|header| header.split(','))
        .find_map(|member| {
            let (name, rest) = member.split_once('=')?;
            (name.trim() == key).then_some(rest)
        })?;
    let value = value.split(';').next().unwrap_or_default().trim();
    // A bad escape is kept as written, and then fails to parse as a label.
    Some(parse(&percent_decode(value, false)))
}

/// `value` (one `baggage` header) without its pins (`meshfed.*` members), or `None` if it
/// has none. An untrusted client's pins are taken out before the header travels on, so that
/// a later gateway, which sees a trusted application as its client, cannot honour them.
pub fn without_pins(value: &str) -> Option<String> {
    let is_pin = |member: &str| member.trim_start().starts_with(KEY_PREFIX);
    if !value.split(',').any(is_pin) {
        return None;
    }
    let kept: Vec<&str> = value.split(',').filter(|m| !is_pin(m)).collect();
    Some(kept.join(","))
}

fn parse(value: &str) -> Result<Pin, BadMember> {
    let (cluster, subset) = match value.split_once('/') {
        Some((cluster, subset)) => (cluster, Some(subset)),
        None => (value, None),
    };
    let cluster: Label = cluster.parse().map_err(|_| BadMember)?;
    let subset = match subset {
        None => None,
        Some(subset) => Some(subset.parse::<Label>().map_err(|_| BadMember)?.to_string()),
    };
    Ok(Pin { cluster, subset })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin_of(values: &[&str]) -> Option<Result<Pin, BadMember>> {
        pin(
            values.iter().copied(),
            &"greeter.demo".parse().expect("key"),
        )
    }

    fn pinned(cluster: &str, subset: Option<&str>) -> Option<Result<Pin, BadMember>> {
        Some(Ok(Pin {
            cluster: cluster.parse().expect("label"),
            subset: subset.map(str::to_owned),
        }))
    }

    #[test]
    fn members() {
        assert_eq!(pin_of(&[]), None);
        assert_eq!(pin_of(&["userId=42"]), None);
        assert_eq!(pin_of(&["meshfed.greeter.demo=west"]), pinned("west", None));
        assert_eq!(
            pin_of(&["userId=42, meshfed.greeter.demo = west/v2 ;ttl=3, x=y"]),
            pinned("west", Some("v2"))
        );
        assert_eq!(
            pin_of(&["a=b", "meshfed.greeter.demo=east%2Fv1"]),
            pinned("east", Some("v1"))
        );
        // Another service's member, or a longer key, is not this service's.
        assert_eq!(pin_of(&["meshfed.checkout.shop=west"]), None);
        assert_eq!(pin_of(&["meshfed.greeter.demo.x=west"]), None);
        // The first member for the service wins.
        assert_eq!(
            pin_of(&["meshfed.greeter.demo=east", "meshfed.greeter.demo=west"]),
            pinned("east", None)
        );
        assert_eq!(without_pins("userId=42"), None);
        assert_eq!(
            without_pins("userId=42, meshfed.greeter.demo=west,x=y").as_deref(),
            Some("userId=42,x=y")
        );
        assert_eq!(without_pins(" meshfed.a.b=west").as_deref(), Some(""));
        for bad in ["", "West!", "west/", "/v2", "west/v2/x", "west%zz", "we st"] {
            assert_eq!(
                pin_of(&[&format!("meshfed.greeter.demo={bad}")]),
                Some(Err(BadMember)),
                "{bad:?}"
            );
        }
    }
}
