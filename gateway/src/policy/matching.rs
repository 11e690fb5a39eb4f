//! Which requests a route applies to.
//!
//! A route has a list of [`Match`]es and applies when any of them does; a match holds when all
//! of its conditions do (Gateway API's `matches`, Istio's `match`). A route with no match
//! applies to every request.

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

/// What a route looks at in a request.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path, already in canonical form ([`super::path::normalize`]).
    pub path: &'a str,
    /// The query string, without the `?`.
    pub query: Option<&'a str>,
    /// The headers as the client sent them.
    pub headers: &'a HeaderMap,
    /// The local client's address, for hashing on the source.
    pub client: Option<std::net::IpAddr>,
}

/// Conditions that must all hold.
#[derive(Clone, Debug, Default)]
pub struct Match {
    /// On the path.
    pub path: Option<PathMatch>,
    /// On the method.
    pub method: Option<Method>,
    /// On headers, each of which must match.
    pub headers: Vec<HeaderMatch>,
    /// On query parameters, each of which must match.
    pub query: Vec<QueryMatch>,
    /// On the gRPC service and method.
    pub grpc: Option<GrpcMatch>,
}

/// How a path is matched.
#[derive(Clone, Debug)]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// A prefix of whole segments: `/api` matches `/api` and `/api/v1`, not `/apiary`.
    Prefix(String),
    /// A regular expression that must match the whole path.
    Regex(Regex),
}

/// How a value (a header's, a query parameter's) is matched.
#[derive(Clone, Debug)]
pub enum ValueMatch {
    /// Exactly this value.
    Exact(String),
    /// A regular expression that must match the whole value.
    Regex(Regex),
    /// Any value, as long as the header or parameter is there.
    Present,
}

/// A condition on one header. A header sent several times is matched on its values joined
/// with `,`, as HTTP allows a recipient to combine them (and as Envoy does).
#[derive(Clone, Debug)]
pub struct HeaderMatch {
    /// The header.
    pub name: HeaderName,
    /// Its value.
    pub value: ValueMatch,
}

/// A condition on one query parameter: its first occurrence, percent-decoded.
#[derive(Clone, Debug)]
pub struct QueryMatch {
    /// The parameter.
    pub name: String,
    /// Its value.
    pub value: ValueMatch,
}

/// A gRPC call (`content-type: application/grpc...`, path `/<service>/<method>`).
#[derive(Clone, Debug, Default)]
pub struct GrpcMatch {
    /// The fully qualified service, such as `helloworld.Greeter`; any if `None`.
    pub service: Option<String>,
    /// The method, such as `SayHello`; any if `None`.
    pub method: Option<String>,
}

impl Match {
    /// Whether every condition holds for `request`.
    pub fn matches(&self, request: &RequestView<'_>) -> bool {
        self.method.as_ref().is_none_or(|m| m == request.method)
            && self.path.as_ref().is_none_or(|p| p.matches(request.path))
            && self.headers.iter().all(|h| h.matches(request.headers))
            && self.query.iter().all(|q| q.matches(request.query))
            && self.grpc.as_ref().is_none_or(|g| g.matches(request))
    }
}

impl PathMatch {
    /// Whether `path` (canonical) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(exact) => path == exact,
            PathMatch::Prefix(prefix) => {
                let prefix = prefix.trim_end_matches('/');
                match path.strip_prefix(prefix) {
                    Some(rest) => rest.is_empty() || rest.starts_with('/'),
                    None => false,
                }
            }
            PathMatch::Regex(regex) => full_match(regex, path),
        }
    }
}

impl ValueMatch {
    fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (_, None) => false,
            (ValueMatch::Present, Some(_)) => true,
            (ValueMatch::Exact(exact), Some(value)) => value == exact,
            (ValueMatch::Regex(regex), Some(value)) => full_match(regex, value),
        }
    }
}

impl HeaderMatch {
    fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        let Some(first) = values.next() else {
            return self.value.matches(None);
        };
        // A value that is not visible ASCII cannot equal one written in config.
        let first = String::from_utf8_lossy(first.as_bytes());
        let mut values = values.peekable();
        if values.peek().is_none() {
            return self.value.matches(Some(&first));
        }
        let mut joined = first.into_owned();
        for value in values {
            joined.push(',');
            joined.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
        self.value.matches(Some(&joined))
    }
}

impl QueryMatch {
    fn matches(&self, query: Option<&str>) -> bool {
        let value = query.and_then(|q| {
            q.split('&').find_map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode_query(name) == self.name).then(|| decode_query(value))
            })
        });
        self.value.matches(value.as_deref())
    }
}

impl GrpcMatch {
    fn matches(&self, request: &RequestView<'_>) -> bool {
        let is_grpc = request
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
        let Some((service, method)) = request
            .path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
        else {
            return false;
        };
        is_grpc
            && self.service.as_deref().is_none_or(|s| s == service)
            && self.method.as_deref().is_none_or(|m| m == method)
    }
}

/// Whether `regex` matches all of `text`. Patterns are compiled anchored (`^(?:...)$`) by the
/// config, so a search is a whole match; this checks the span anyway.
fn full_match(regex: &Regex, text: &str) -> bool {
    regex
        .find(text)
        .is_some_and(|m| m.start() == 0 && m.end() == text.len())
}

/// A query component percent-decoded, with `+` as a space (form encoding).
fn decode_query(text: &str) -> String {
    percent_decode(text, true)
}

/// `text` with `%XX` escapes decoded (and `+` as a space if `plus_is_space`). An invalid
/// escape is kept as written.
pub(crate) fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], decoded) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (byte, None) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(method: &'a Method, target: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        RequestView {
            method,
            path,
            query,
            headers,
            client: None,
        }
    }

    fn anchored(pattern: &str) -> Regex {
        Regex::new(&format!("^(?:{pattern})$")).expect("regex")
    }

    #[test]
    fn conditions() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "alice".parse().expect("value"));
        headers.append("x-tag", "a".parse().expect("value"));
        headers.append("x-tag", "b".parse().expect("value"));
        let grpc = {
            let mut h = HeaderMap::new();
            h.insert("content-type", "application/grpc".parse().expect("value"));
            h
        };
        let get = Method::GET;
        let post = Method::POST;
        let on = |path: Option<PathMatch>| Match {
            path,
            ..Match::default()
        };
        let header = |name: &str, value: ValueMatch| Match {
            headers: vec![HeaderMatch {
                name: name.parse().expect("name"),
                value,
            }],
            ..Match::default()
        };
        let query = |name: &str, value: ValueMatch| Match {
            query: vec![QueryMatch {
                name: name.to_owned(),
                value,
            }],
            ..Match::default()
        };
        let grpc_match = |service: Option<&str>, method: Option<&str>| Match {
            grpc: Some(GrpcMatch {
                service: service.map(str::to_owned),
                method: method.map(str::to_owned),
            }),
            ..Match::default()
        };
        let cases: Vec<(&str, Match, RequestView<'_>, bool)> = vec![
            (
                "empty matches all",
                Match::default(),
                view(&get, "/x", &headers),
                true,
            ),
            (
                "exact",
                on(Some(PathMatch::Exact("/a".into()))),
                view(&get, "/a", &headers),
                true,
            ),
            (
                "exact other",
                on(Some(PathMatch::Exact("/a".into()))),
                view(&get, "/a/", &headers),
                false,
            ),
            (
                "prefix self",
                on(Some(PathMatch::Prefix("/api".into()))),
                view(&get, "/api", &headers),
                true,
            ),
            (
                "prefix below",
                on(Some(PathMatch::Prefix("/api/".into()))),
                view(&get, "/api/v1", &headers),
                true,
            ),
            (
                "prefix is by segment",
                on(Some(PathMatch::Prefix("/api".into()))),
                view(&get, "/apiary", &headers),
                false,
            ),
            (
                "prefix root",
                on(Some(PathMatch::Prefix("/".into()))),
                view(&get, "/x", &headers),
                true,
            ),
            (
                "regex whole",
                on(Some(PathMatch::Regex(anchored("/v[0-9]+")))),
                view(&get, "/v12", &headers),
                true,
            ),
            (
                "regex not partial",
                on(Some(PathMatch::Regex(anchored("/v[0-9]+")))),
                view(&get, "/v12/x", &headers),
                false,
            ),
            (
                "method",
                Match {
                    method: Some(Method::POST),
                    ..Match::default()
                },
                view(&post, "/", &headers),
                true,
            ),
            (
                "method other",
                Match {
                    method: Some(Method::POST),
                    ..Match::default()
                },
                view(&get, "/", &headers),
                false,
            ),
            (
                "header exact",
                header("x-user", ValueMatch::Exact("alice".into())),
                view(&get, "/", &headers),
                true,
            ),
            (
                "header exact other",
                header("x-user", ValueMatch::Exact("bob".into())),
                view(&get, "/", &headers),
                false,
            ),
            (
                "header absent",
                header("x-none", ValueMatch::Exact("".into())),
                view(&get, "/", &headers),
                false,
            ),
            (
                "header present",
                header("x-user", ValueMatch::Present),
                view(&get, "/", &headers),
                true,
            ),
            (
                "header present absent",
                header("x-none", ValueMatch::Present),
                view(&get, "/", &headers),
                false,
            ),
            (
                "header joined",
                header("x-tag", ValueMatch::Exact("a,b".into())),
                view(&get, "/", &headers),
                true,
            ),
            (
                "header regex",
                header("x-user", ValueMatch::Regex(anchored("al.*"))),
                view(&get, "/", &headers),
                true,
            ),
            (
                "query",
                query("debug", ValueMatch::Exact("1".into())),
                view(&get, "/?a=2&debug=1", &headers),
                true,
            ),
            (
                "query first wins",
                query("d", ValueMatch::Exact("1".into())),
                view(&get, "/?d=2&d=1", &headers),
                false,
            ),
            (
                "query decoded",
                query("q", ValueMatch::Exact("a b/c".into())),
                view(&get, "/?q=a+b%2Fc", &headers),
                true,
            ),
            (
                "query present",
                query("flag", ValueMatch::Present),
                view(&get, "/?flag", &headers),
                true,
            ),
            (
                "query none",
                query("flag", ValueMatch::Present),
                view(&get, "/", &headers),
                false,
            ),
            (
                "grpc any",
                grpc_match(None, None),
                view(&post, "/helloworld.Greeter/SayHello", &grpc),
                true,
            ),
            (
                "grpc service",
                grpc_match(Some("helloworld.Greeter"), None),
                view(&post, "/helloworld.Greeter/SayHello", &grpc),
                true,
            ),
            (
                "grpc method",
                grpc_match(Some("helloworld.Greeter"), Some("SayHi")),
                view(&post, "/helloworld.Greeter/SayHello", &grpc),
                false,
            ),
            (
                "grpc needs grpc",
                grpc_match(None, None),
                view(&post, "/helloworld.Greeter/SayHello", &headers),
                false,
            ),
        ];
        for (name, m, request, want) in cases {
            assert_eq!(m.matches(&request), want, "{name}");
        }
    }
}
