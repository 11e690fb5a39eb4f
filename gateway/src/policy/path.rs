//! Request paths in one canonical form, so that routing and authorization see `//admin`,
//! `/./admin`, `/%2e/admin` and `/admin` as the one path they are, and the endpoint is sent that
//! same form: what was decided on is what is served.
//!
//! The rules are Envoy's `normalize_path` plus `merge_slashes`:
//!
//! - escapes of unreserved characters (letters, digits, `-._~`) are decoded, since RFC 3986
//!   says they are equivalent to the characters; every other escape is kept, with upper-case
//!   hex (`%2f` becomes `%2F`): an encoded `/` is data within a segment, not a separator;
//! - runs of `/` become one;
//! - `.` and `..` segments are removed (RFC 3986 section 5.2.4), and `..` never climbs above
//!   the root.

use std::borrow::Cow;

/// A path that cannot be made canonical.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not begin with `/` (an asterisk-form or absolute-form leftover).
    #[error("the path does not begin with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("a '%' not followed by two hex digits")]
    BadEscape,
    /// A raw `\`, which some servers read as `/`: refused rather than guessed at.
    #[error("a '\\' in the path")]
    Backslash,
    /// The canonical form does not make a valid request target (never seen; kept for safety).
    #[error("the canonical path is not a valid request target")]
    NotATarget,
}

/// `uri` with its path made canonical, or `None` when it already is. Scheme, authority and
/// query stay as they are.
pub fn canonical_uri(uri: &http::Uri) -> Result<Option<http::Uri>, PathError> {
    let path = match normalize(uri.path())? {
        Cow::Borrowed(_) => return Ok(None),
        Cow::Owned(path) => path,
    };
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query =
        Some(http::uri::PathAndQuery::try_from(target).map_err(|_| PathError::NotATarget)?);
    http::Uri::from_parts(parts)
        .map(Some)
        .map_err(|_| PathError::NotATarget)
}

/// The canonical form of `path` (without its query); borrowed when `path` already is (the
/// common case, which costs one scan and no allocation).
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let rest = path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    if rest.contains('\\') {
        return Err(PathError::Backslash);
    }
    if is_canonical(rest) {
        return Ok(Cow::Borrowed(path));
    }
    let mut kept: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    let mut segments = rest.split('/').peekable();
    while let Some(raw) = segments.next() {
        let last = segments.peek().is_none();
        let segment = decode_unreserved(raw)?;
        match segment.as_str() {
            "" | "." => trailing_slash |= last,
            ".." => {
                kept.pop();
                trailing_slash |= last;
            }
            _ => {
                kept.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if kept.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Whether a path (after its first `/`) has no escape, no empty segment but a trailing one,
/// and no `.` or `..` segment.
fn is_canonical(rest: &str) -> bool {
    if rest.is_empty() {
        return true;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let empty_inside = segment.is_empty() && !last;
        if empty_inside || segment == "." || segment == ".." || segment.contains('%') {
            return false;
        }
    }
    true
}

/// Decodes the escapes of unreserved characters in one segment and upper-cases the rest.
/// Bytes are copied as they are, so a segment in UTF-8 stays intact.
fn decode_unreserved(segment: &str) -> Result<String, PathError> {
    let bytes = segment.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
        let value = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or(PathError::BadEscape)?;
        if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
            out.push(value);
        } else {
            out.extend_from_slice(format!("%{value:02X}").as_bytes());
        }
        i += 3;
    }
    // Only ASCII was decoded into a copy of valid UTF-8: it is still valid.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        let cases = [
            ("//caf\u{e9}/./x", "/caf\u{e9}/x"),
            ("/%2e/\u{65e5}\u{672c}", "/\u{65e5}\u{672c}"),
            ("/", "/"),
            ("//", "/"),
            ("/admin", "/admin"),
            ("//admin", "/admin"),
            ("/./admin", "/admin"),
            ("/%2e/admin", "/admin"),
            ("/%2E%2E/admin", "/admin"),
            ("/a/../admin", "/admin"),
            ("/a/%2e%2e/admin", "/admin"),
            ("/../../admin", "/admin"),
            ("/admin/", "/admin/"),
            ("/admin/.", "/admin/"),
            ("/admin/x/..", "/admin/"),
            ("/%61dmin", "/admin"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%2Fb/../c", "/c"),
            ("/a b", "/a b"),
            ("/a//b///c", "/a/b/c"),
            ("/%7Euser", "/~user"),
        ];
        for (path, want) in cases {
            let got = normalize(path);
            assert_eq!(got.as_deref(), Ok(want), "{path}");
            // Borrowed exactly when nothing had to change.
            assert_eq!(matches!(got, Ok(Cow::Borrowed(_))), path == want, "{path}");
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(normalize("admin"), Err(PathError::NotAbsolute));
        assert_eq!(normalize("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalize("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%"), Err(PathError::BadEscape));
        assert_eq!(normalize("/public\\..\\admin"), Err(PathError::Backslash));
    }
}
