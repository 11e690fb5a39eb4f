//! Validating services: exports with their ports and endpoints, and TCP service listeners.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use meshfed_discovery::Label;

use super::raw::{RawConfig, RawExport, RawPort, RawTcpService};
use super::validate::{Checker, parse_label, parse_port, parse_service, parse_socket};
use super::{Config, EndpointSource, Export, Listeners, LocalEndpoint, Port, Protocol, TcpService};

/// An endpoint as written: an IP address, with or without a port.
#[derive(Clone, Copy)]
struct Endpoint {
    ip: IpAddr,
    port: Option<u16>,
}

/// A port before its endpoints are known.
struct PortSpec {
    name: Option<Label>,
    port: u16,
    protocol: Protocol,
    target_port: Option<u16>,
}

impl Checker {
    pub(super) fn export(&mut self, at: &str, raw: &RawExport) -> Option<Export> {
        let name = self.required(&format!("{at}.name"), raw.name.as_ref(), parse_label);
        let namespace = self.required(
            &format!("{at}.namespace"),
            raw.namespace.as_ref(),
            parse_label,
        );
        if raw.ports.is_empty() {
            self.missing(&format!("{at}.ports"), "a service needs at least one port");
        }
        let source = match (&raw.endpoints_from, raw.endpoints.is_empty()) {
            (None, true) => {
                self.missing(
                    &format!("{at}.endpoints"),
                    "a service needs `endpoints`, or `endpoints_from` to find them in DNS",
                );
                None
            }
            (None, false) => Some(EndpointSource::Static),
            (Some(_), false) => {
                self.missing(
                    &format!("{at}.endpoints_from"),
                    "give `endpoints` or `endpoints_from`, not both",
                );
                None
            }
            (Some(from), true) => {
                self.endpoints_from(&format!("{at}.endpoints_from"), from, raw.ports.len())
            }
        };
        let ports: Vec<Option<PortSpec>> = raw
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| self.port(&format!("{at}.ports[{i}]"), p))
            .collect();
        let several = raw.ports.len() > 1;
        let endpoints: Vec<Option<Endpoint>> = raw
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let endpoint = self.value(&format!("{at}.endpoints[{i}]"), e, parse_endpoint)?;
                if several && endpoint.port.is_some() {
                    self.invalid(
                        &format!("{at}.endpoints[{i}]"),
                        e,
                        "a service with several ports lists its endpoints without a port; \
                         give a port whose endpoints listen elsewhere a `target_port`",
                    );
                    return None;
                }
                Some(endpoint)
            })
            .collect();
        let export_to: Vec<Option<Label>> = raw
            .export_to
            .iter()
            .enumerate()
            .map(|(i, e)| self.value(&format!("{at}.export_to[{i}]"), e, parse_label))
            .collect();
        let headless = raw.headless.as_ref().map_or(Some(false), |h| {
            self.value(&format!("{at}.headless"), h, parse_bool)
        });
        let first_port = ports.first().and_then(|p| p.as_ref()).map(|p| p.port);
        let health_check = raw
            .health_check
            .as_ref()
            .map(|raw| self.health_check(&format!("{at}.health_check"), raw, first_port));
        let endpoints: Vec<LocalEndpoint> = endpoints
            .into_iter()
            .map(|e| {
                e.map(|e| LocalEndpoint {
                    ip: e.ip,
                    port: e.port,
                    hostname: None,
                })
            })
            .collect::<Option<_>>()?;
        let ports: Vec<Port> = ports
            .into_iter()
            .map(|spec| {
                let spec = spec?;
                let mut port = Port {
                    endpoints: Vec::new(),
                    name: spec.name,
                    port: spec.port,
                    protocol: spec.protocol,
                    target_port: spec.target_port,
                };
                port.endpoints = endpoints.iter().map(|e| port.address_of(e)).collect();
                Some(port)
            })
            .collect::<Option<_>>()?;
        let health_check = health_check.map_or(Some(None), |h| h.map(Some))?;
        if let Some(check) = &health_check
            && !ports.iter().any(|p| p.port == check.port)
        {
            self.missing(
                &format!("{at}.health_check.port"),
                &format!("{} is not a port of the service", check.port),
            );
        }
        let mut labels = std::collections::BTreeMap::new();
        let mut labels_ok = true;
        for (key, value) in &raw.labels {
            let path = format!("{at}.labels.{key}");
            if let Err(reason) = super::policy::parse_label_part(key) {
                self.invalid_at(&path, key, &reason);
                labels_ok = false;
            }
            match self.value(&path, value, |v| {
                super::policy::parse_label_part(v).map(|()| v.to_owned())
            }) {
                Some(value) => {
                    labels.insert(key.clone(), value);
                }
                None => labels_ok = false,
            }
        }
        labels_ok.then_some(())?;
        Some(Export {
            labels,
            service: meshfed_discovery::ServiceKey {
                name: name?,
                namespace: namespace?,
            },
            ports,
            export_to: export_to.into_iter().collect::<Option<_>>()?,
            headless: headless?,
            endpoints,
            source: source?,
            health_check,
        })
    }

    fn port(&mut self, at: &str, raw: &RawPort) -> Option<PortSpec> {
        let name = raw
            .name
            .as_ref()
            .map(|n| self.value(&format!("{at}.name"), n, parse_label));
        let port = self.required(&format!("{at}.port"), raw.port.as_ref(), parse_port);
        let protocol = self.required(
            &format!("{at}.protocol"),
            raw.protocol.as_ref(),
            parse_protocol,
        );
        let target_port = raw
            .target_port
            .as_ref()
            .map(|t| self.value(&format!("{at}.target_port"), t, parse_port));
        Some(PortSpec {
            name: name.map_or(Some(None), |n| n.map(Some))?,
            port: port?,
            protocol: protocol?,
            target_port: target_port.map_or(Some(None), |t| t.map(Some))?,
        })
    }

    pub(super) fn tcp_service(
        &mut self,
        at: &str,
        raw: &RawTcpService,
        listeners: Option<&Listeners>,
    ) -> Option<TcpService> {
        let service = self.required(
            &format!("{at}.service"),
            raw.service.as_ref(),
            parse_service,
        );
        let port = self.required(&format!("{at}.port"), raw.port.as_ref(), parse_port);
        let listen = match &raw.listen {
            Some(listen) => self.value(&format!("{at}.listen"), listen, parse_socket),
            None => Some(SocketAddr::new(listeners?.http.ip(), port?)),
        };
        Some(TcpService {
            service: service?,
            port: port?,
            listen: listen?,
        })
    }

    /// Rules between services: each export and port once, TCP services that name a TCP port
    /// and listen on an address of their own.
    pub(super) fn cross_check_services(&mut self, raw: &RawConfig, config: &Config) {
        for (i, export) in config.exports.iter().enumerate() {
            let raw_export = &raw.exports[i];
            let mut names = BTreeSet::new();
            let mut numbers = BTreeSet::new();
            for (j, port) in export.ports.iter().enumerate() {
                let at = format!("exports[{i}].ports[{j}]");
                if let Some(name) = &port.name
                    && !names.insert(name)
                {
                    self.error(
                        &format!("{at}.name"),
                        raw_export.ports[j].name.as_ref(),
                        "repeats another port's name",
                    );
                }
                if !numbers.insert(port.port) {
                    self.error(
                        &format!("{at}.port"),
                        raw_export.ports[j].port.as_ref(),
                        "repeats another port's number",
                    );
                }
            }
        }
        let listeners = &config.listeners;
        let taken = [
            ("listeners.http", listeners.http),
            ("listeners.admin", listeners.admin),
            ("listeners.dns", listeners.dns),
            ("listeners.federation", listeners.federation),
        ];
        let mut listening: Vec<(String, SocketAddr)> = taken
            .iter()
            .map(|(name, addr)| ((*name).to_owned(), *addr))
            .collect();
        for (i, tcp) in config.tcp_services.iter().enumerate() {
            let at = format!("tcp_services[{i}]");
            let raw_tcp = &raw.tcp_services[i];
            if let Some(export) = config.exports.iter().find(|e| e.service == tcp.service)
                && export.tcp_port(tcp.port).is_none()
            {
                self.error(
                    &format!("{at}.port"),
                    raw_tcp.port.as_ref(),
                    &format!(
                        "{} exported here has no `tcp` port {}",
                        tcp.service, tcp.port
                    ),
                );
            }
            if tcp.listen.port() != 0
                && let Some((other, _)) = listening.iter().find(|(_, a)| *a == tcp.listen)
            {
                self.error(
                    &format!("{at}.listen"),
                    raw_tcp.listen.as_ref().or(raw_tcp.port.as_ref()),
                    &format!("{} is also {other}", tcp.listen),
                );
            }
            listening.push((at, tcp.listen));
        }
    }
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    Protocol::from_name(s)
        .ok_or_else(|| format!("unknown protocol {s:?}; expected `http`, `http2`, `grpc` or `tcp`"))
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("expected `true` or `false`, not {other:?}")),
    }
}

fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err("port 0 is not a port an endpoint can serve".into());
        }
        return Ok(Endpoint {
            ip: addr.ip(),
            port: Some(addr.port()),
        });
    }
    s.parse::<IpAddr>()
        .map(|ip| Endpoint { ip, port: None })
        .map_err(|_| {
            "expected an IP address, with or without a port, as in `10.0.0.7:8080` or `10.0.0.7`"
                .into()
        })
}
