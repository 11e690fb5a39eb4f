//! Validating where an export's endpoints come from and how they are checked.

use std::time::Duration;

use super::raw::{RawEndpointsFrom, RawHealthCheck};
use super::validate::{Checker, parse_port, parse_socket};
use super::{DnsRecord, EndpointSource, HealthCheck, Probe, duration};

/// Health check timing when config does not say.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_HEALTHY: u32 = 2;
const DEFAULT_UNHEALTHY: u32 = 3;
/// Checks more often than this would be load, not information.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

impl Checker {
    pub(super) fn endpoints_from(
        &mut self,
        at: &str,
        raw: &RawEndpointsFrom,
        ports: usize,
    ) -> Option<EndpointSource> {
        let server = raw
            .server
            .as_ref()
            .map(|s| self.value(&format!("{at}.server"), s, parse_socket));
        let (name, record, key) = match (&raw.dns, &raw.srv) {
            (Some(name), None) => (name, DnsRecord::Address, "dns"),
            (None, Some(name)) => (name, DnsRecord::Srv, "srv"),
            (Some(_), Some(srv)) => {
                self.invalid(&format!("{at}.srv"), srv, "give `dns` or `srv`, not both");
                return None;
            }
            (None, None) => {
                self.missing(at, "needs `dns` (A/AAAA records) or `srv` (SRV records)");
                return None;
            }
        };
        let name = self.value(&format!("{at}.{key}"), name, parse_dns_name)?;
        if record == DnsRecord::Srv && ports != 1 {
            self.error(
                &format!("{at}.srv"),
                raw.srv.as_ref(),
                "SRV records give one port per endpoint: a service found by `srv` has exactly one port",
            );
            return None;
        }
        Some(EndpointSource::Dns {
            name,
            record,
            server: server.map_or(Some(None), |s| s.map(Some))?,
        })
    }

    pub(super) fn health_check(
        &mut self,
        at: &str,
        raw: &RawHealthCheck,
        first_port: Option<u16>,
    ) -> Option<HealthCheck> {
        let kind = self.required(
            &format!("{at}.protocol"),
            raw.protocol.as_ref(),
            |s| match s {
                "tcp" | "http" | "grpc" => Ok(s.to_owned()),
                other => Err(format!(
                    "unknown health check protocol {other:?}; expected `tcp`, `http` or `grpc`"
                )),
            },
        );
        let path = raw
            .path
            .as_ref()
            .map(|p| self.value(&format!("{at}.path"), p, parse_path));
        let service = raw.service.as_ref().map(|s| s.value.trim().to_owned());
        let probe = match kind?.as_str() {
            "tcp" => Probe::Tcp,
            "http" => Probe::Http {
                path: path.unwrap_or(Some("/".to_owned()))?,
            },
            _ => Probe::Grpc {
                service: service.unwrap_or_default(),
            },
        };
        if !matches!(probe, Probe::Http { .. })
            && let Some(path) = &raw.path
        {
            self.invalid(
                &format!("{at}.path"),
                path,
                "only an `http` check has a path",
            );
        }
        if !matches!(probe, Probe::Grpc { .. })
            && let Some(service) = &raw.service
        {
            self.invalid(
                &format!("{at}.service"),
                service,
                "only a `grpc` check names a service",
            );
        }
        let port = match &raw.port {
            Some(port) => self.value(&format!("{at}.port"), port, parse_port),
            None => first_port,
        };
        let interval = self.optional(
            &format!("{at}.interval"),
            raw.interval.as_ref(),
            DEFAULT_INTERVAL,
            |s| {
                let interval = duration::parse(s)?;
                if interval < MIN_INTERVAL {
                    return Err(format!("at least {MIN_INTERVAL:?}"));
                }
                Ok(interval)
            },
        );
        let timeout = self.optional(
            &format!("{at}.timeout"),
            raw.timeout.as_ref(),
            DEFAULT_TIMEOUT,
            duration::parse,
        );
        if let (Some(interval), Some(timeout)) = (interval, timeout)
            && timeout > interval
        {
            self.error(
                &format!("{at}.timeout"),
                raw.timeout.as_ref(),
                "must not be longer than the interval",
            );
        }
        let healthy = self.optional(
            &format!("{at}.healthy_threshold"),
            raw.healthy_threshold.as_ref(),
            DEFAULT_HEALTHY,
            parse_threshold,
        );
        let unhealthy = self.optional(
            &format!("{at}.unhealthy_threshold"),
            raw.unhealthy_threshold.as_ref(),
            DEFAULT_UNHEALTHY,
            parse_threshold,
        );
        Some(HealthCheck {
            probe,
            port: port?,
            interval: interval?,
            timeout: timeout?,
            healthy_threshold: healthy?,
            unhealthy_threshold: unhealthy?,
        })
    }
}

fn parse_dns_name(s: &str) -> Result<String, String> {
    let name = s.trim_end_matches('.');
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err("not a DNS name".to_owned());
    }
    Ok(format!("{}.", name.to_ascii_lowercase()))
}

fn parse_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') || s.contains(char::is_whitespace) {
        return Err("a path starts with `/` and has no spaces".to_owned());
    }
    Ok(s.to_owned())
}

fn parse_threshold(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n @ 1..=100) => Ok(n),
        _ => Err("a count from 1 to 100".to_owned()),
    }
}
