//! Trace context on the wire: W3C Trace Context (`traceparent`, `tracestate`) and B3, single
//! (`b3`) and multi-header (`x-b3-*`). Pure parsing and formatting, no I/O.
//!
//! A request may carry either or both. W3C is read first (it is what meshfed gateways send each
//! other); B3 is read when W3C is absent or ill-formed. Whatever a request carried is written
//! again, with the new span, on the request sent on: an application that speaks only B3 gets
//! B3 back, and `traceparent` is always written so the next gateway continues the trace.

use std::fmt;

use http::{HeaderMap, HeaderValue};

/// W3C `traceparent`: `00-<trace-id>-<parent-id>-<flags>`.
pub(crate) const TRACEPARENT: &str = "traceparent";
/// W3C `tracestate`: vendors' entries, carried through unchanged.
pub(crate) const TRACESTATE: &str = "tracestate";
/// B3 single header: `<trace-id>-<span-id>[-<sampled>[-<parent-id>]]`, or only `<sampled>`.
pub(crate) const B3: &str = "b3";
const B3_TRACE_ID: &str = "x-b3-traceid";
const B3_SPAN_ID: &str = "x-b3-spanid";
const B3_PARENT_SPAN_ID: &str = "x-b3-parentspanid";
const B3_SAMPLED: &str = "x-b3-sampled";
const B3_FLAGS: &str = "x-b3-flags";

/// The longest `tracestate` carried on (the W3C limit a vendor must propagate is 512); past
/// it, members are dropped as W3C says: those over [`MAX_TRACESTATE_MEMBER`] first, then from
/// the end.
const MAX_TRACESTATE: usize = 512;
const MAX_TRACESTATE_MEMBER: usize = 128;

/// A trace's 16-byte ID; never all zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TraceId(pub(crate) [u8; 16]);

/// A span's 8-byte ID; never all zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SpanId(pub(crate) [u8; 8]);

/// The B3 form a request arrived with, to be written again on the request sent on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum B3Style {
    Single,
    Multi,
}

/// What a request's headers say about the trace it belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Incoming {
    /// The caller's trace and span, if it sent them.
    pub(crate) parent: Option<(TraceId, SpanId)>,
    /// The caller's sampling decision, if it made one (B3 may defer it).
    pub(crate) sampled: Option<bool>,
    /// B3 debug: sampled, and to be written back as debug.
    pub(crate) debug: bool,
    /// The W3C `tracestate`, carried on unchanged.
    pub(crate) tracestate: Option<HeaderValue>,
    /// The B3 form the request used, if any.
    pub(crate) b3: Option<B3Style>,
}

/// The context a span hands to the next hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outgoing<'a> {
    pub(crate) trace_id: TraceId,
    /// The span the next hop's span is a child of.
    pub(crate) span_id: SpanId,
    /// That span's parent, for B3's `ParentSpanId`.
    pub(crate) parent_span_id: Option<SpanId>,
    pub(crate) sampled: bool,
    pub(crate) debug: bool,
    pub(crate) tracestate: Option<&'a HeaderValue>,
    pub(crate) b3: Option<B3Style>,
}

/// Reads the trace context of a request. Ill-formed headers are ignored, as W3C asks: the
/// request starts a new trace rather than failing.
pub(crate) fn extract(headers: &HeaderMap) -> Incoming {
    let b3 = if headers.contains_key(B3) {
        Some(B3Style::Single)
    } else if [B3_TRACE_ID, B3_SAMPLED, B3_FLAGS]
        .iter()
        .any(|name| headers.contains_key(*name))
    {
        Some(B3Style::Multi)
    } else {
        None
    };
    if let Some((trace_id, span_id, sampled)) = one(headers, TRACEPARENT).and_then(traceparent) {
        return Incoming {
            parent: Some((trace_id, span_id)),
            sampled: Some(sampled),
            debug: false,
            tracestate: tracestate(headers),
            b3,
        };
    }
    // Without a valid traceparent, tracestate means nothing (W3C section 3.3).
    let Parsed {
        ids,
        sampled,
        debug,
    } = match b3 {
        Some(B3Style::Single) => one(headers, B3).map(b3_single).unwrap_or_default(),
        Some(B3Style::Multi) => b3_multi(headers),
        None => Parsed::default(),
    };
    Incoming {
        parent: ids,
        sampled,
        debug,
        tracestate: None,
        b3,
    }
}

/// Writes `context` onto a request about to be sent, replacing any trace headers it carried.
pub(crate) fn inject(headers: &mut HeaderMap, context: &Outgoing<'_>) {
    for name in [
        TRACEPARENT,
        TRACESTATE,
        B3,
        B3_TRACE_ID,
        B3_SPAN_ID,
        B3_PARENT_SPAN_ID,
        B3_SAMPLED,
        B3_FLAGS,
    ] {
        headers.remove(name);
    }
    let flags = if context.sampled { "01" } else { "00" };
    let traceparent = format!("00-{}-{}-{flags}", context.trace_id, context.span_id);
    insert(headers, TRACEPARENT, traceparent);
    if let Some(state) = context.tracestate {
        headers.insert(TRACESTATE, state.clone());
    }
    let sampled = match (context.debug, context.sampled) {
        (true, _) => "d",
        (false, true) => "1",
        (false, false) => "0",
    };
    match context.b3 {
        None => {}
        Some(B3Style::Single) => {
            let mut value = format!("{}-{}-{sampled}", context.trace_id, context.span_id);
            if let Some(parent) = context.parent_span_id {
                value = format!("{value}-{parent}");
            }
            insert(headers, B3, value);
        }
        Some(B3Style::Multi) => {
            insert(headers, B3_TRACE_ID, context.trace_id.to_string());
            insert(headers, B3_SPAN_ID, context.span_id.to_string());
            if let Some(parent) = context.parent_span_id {
                insert(headers, B3_PARENT_SPAN_ID, parent.to_string());
            }
            match context.debug {
                // Debug implies sampled; X-B3-Sampled is not sent with it.
                true => insert(headers, B3_FLAGS, "1".to_owned()),
                false => insert(headers, B3_SAMPLED, sampled.to_owned()),
            }
        }
    }
}

// === impl TraceId, SpanId ===

impl TraceId {
    /// Parses 32 lowercase hex digits (W3C), or 16 or 32 in either case (B3, whose 64-bit IDs
    /// are widened with leading zeros).
    fn parse(s: &str, widen: bool) -> Option<TraceId> {
        let mut id = [0u8; 16];
        match s.len() {
            32 => hex(s, &mut id)?,
            16 if widen => hex(s, &mut id[8..])?,
            _ => return None,
        }
        (id != [0; 16]).then_some(TraceId(id))
    }
}

impl SpanId {
    fn parse(s: &str) -> Option<SpanId> {
        let mut id = [0u8; 8];
        if s.len() != 16 {
            return None;
        }
        hex(s, &mut id)?;
        (id != [0; 8]).then_some(SpanId(id))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

// --- helpers ---

/// A header's value when it appears exactly once.
fn one<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok().map(str::trim)
}

fn traceparent(value: &str) -> Option<(TraceId, SpanId, bool)> {
    let mut fields = value.split('-');
    let version = fields.next()?;
    let trace_id = fields.next()?;
    let span_id = fields.next()?;
    let flags = fields.next()?;
    // Version 00 has exactly four fields; a later version may append more, which we skip.
    if version.len() != 2 || version == "ff" || !lower_hex(version) {
        return None;
    }
    if version == "00" && fields.next().is_some() {
        return None;
    }
    if !lower_hex(trace_id) || !lower_hex(span_id) || flags.len() != 2 || !lower_hex(flags) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((
        TraceId::parse(trace_id, false)?,
        SpanId::parse(span_id)?,
        flags & 1 == 1,
    ))
}

/// What B3 headers say.
#[derive(Debug, Default)]
struct Parsed {
    ids: Option<(TraceId, SpanId)>,
    sampled: Option<bool>,
    debug: bool,
}

fn b3_single(value: &str) -> Parsed {
    let fields: Vec<&str> = value.split('-').collect();
    let (ids, sampling) = match fields.as_slice() {
        [sampling] => (None, Some(*sampling)),
        [trace_id, span_id, rest @ ..] if rest.len() <= 2 => (
            TraceId::parse(trace_id, true).zip(SpanId::parse(span_id)),
            rest.first().copied(),
        ),
        _ => return Parsed::default(),
    };
    // B3's sampling state: `1` accept, `d` debug (accept), `0` deny.
    let (sampled, debug) = match sampling {
        Some("1") => (Some(true), false),
        Some("d") => (Some(true), true),
        Some("0") => (Some(false), false),
        _ => (None, false),
    };
    Parsed {
        ids,
        sampled,
        debug,
    }
}

fn b3_multi(headers: &HeaderMap) -> Parsed {
    let ids = one(headers, B3_TRACE_ID)
        .and_then(|t| TraceId::parse(t, true))
        .zip(one(headers, B3_SPAN_ID).and_then(SpanId::parse));
    let debug = one(headers, B3_FLAGS) == Some("1");
    let sampled = match one(headers, B3_SAMPLED) {
        _ if debug => Some(true),
        Some("1" | "true") => Some(true),
        Some("0" | "false") => Some(false),
        _ => None,
    };
    Parsed {
        ids,
        sampled,
        debug,
    }
}

/// Every `tracestate` header combined into one list, as W3C asks, within [`MAX_TRACESTATE`].
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut members: Vec<&str> = Vec::new();
    for value in headers.get_all(TRACESTATE) {
        let value = value.to_str().ok()?;
        members.extend(value.split(',').map(str::trim).filter(|m| !m.is_empty()));
    }
    let length = |members: &[&str]| {
        members.iter().map(|m| m.len()).sum::<usize>() + members.len().saturating_sub(1)
    };
    if length(&members) > MAX_TRACESTATE {
        members.retain(|m| m.len() <= MAX_TRACESTATE_MEMBER);
    }
    while length(&members) > MAX_TRACESTATE {
        members.pop();
    }
    if members.is_empty() {
        return None;
    }
    HeaderValue::from_str(&members.join(",")).ok()
}

fn lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex(s: &str, out: &mut [u8]) -> Option<()> {
    // `from_str_radix` alone would take a sign.
    if s.len() != out.len() * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(s.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(())
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: String) {
    // Hex digits and dashes only: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("valid"));
        }
        map
    }

    fn ids(trace: &str, span: &str) -> Option<(TraceId, SpanId)> {
        Some((
            TraceId::parse(trace, true).expect("valid"),
            SpanId::parse(span).expect("valid"),
        ))
    }

    #[test]
    fn reads_each_form() {
        let widened = format!("0000000000000000{}", &TRACE[16..]);
        let cases: Vec<(Vec<(&'static str, String)>, Incoming)> = vec![
            (
                vec![(TRACEPARENT, format!("00-{TRACE}-{SPAN}-01"))],
                Incoming {
                    parent: ids(TRACE, SPAN),
                    sampled: Some(true),
                    ..Incoming::default()
                },
            ),
            (
                vec![(TRACEPARENT, format!("00-{TRACE}-{SPAN}-00"))],
                Incoming {
                    parent: ids(TRACE, SPAN),
                    sampled: Some(false),
                    ..Incoming::default()
                },
            ),
            // A later version's extra fields are skipped.
            (
                vec![(TRACEPARENT, format!("01-{TRACE}-{SPAN}-03-extra"))],
                Incoming {
                    parent: ids(TRACE, SPAN),
                    sampled: Some(true),
                    ..Incoming::default()
                },
            ),
            (
                vec![(B3, format!("{TRACE}-{SPAN}-1-{SPAN}"))],
                Incoming {
                    parent: ids(TRACE, SPAN),
                    sampled: Some(true),
                    b3: Some(B3Style::Single),
                    ..Incoming::default()
                },
            ),
            (
                vec![(B3, format!("{}-{SPAN}", &TRACE[16..]))],
                Incoming {
                    parent: ids(&widened, SPAN),
                    sampled: None,
                    b3: Some(B3Style::Single),
                    ..Incoming::default()
                },
            ),
            (
                vec![(B3, "0".into())],
                Incoming {
                    sampled: Some(false),
                    b3: Some(B3Style::Single),
                    ..Incoming::default()
                },
            ),
            (
                vec![
                    (B3_TRACE_ID, TRACE.to_uppercase()),
                    (B3_SPAN_ID, SPAN.into()),
                    (B3_FLAGS, "1".into()),
                    (B3_SAMPLED, "0".into()),
                ],
                Incoming {
                    parent: ids(TRACE, SPAN),
                    sampled: Some(true),
                    debug: true,
                    b3: Some(B3Style::Multi),
                    ..Incoming::default()
                },
            ),
            // W3C wins over B3; the B3 form is still remembered for the way on.
            (
                vec![
                    (TRACEPARENT, format!("00-{TRACE}-{SPAN}-01")),
                    (B3, format!("{}-{SPAN}-0", "a".repeat(32))),
                ],
                Incoming {
                    parent: ids(TRACE, SPAN),
                    sampled: Some(true),
                    b3: Some(B3Style::Single),
                    ..Incoming::default()
                },
            ),
        ];
        for (pairs, want) in cases {
            let pairs: Vec<(&'static str, &str)> =
                pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
            assert_eq!(extract(&headers(&pairs)), want, "{pairs:?}");
        }
    }

    #[test]
    fn ignores_ill_formed_traceparents() {
        let zero_trace = "0".repeat(32);
        let zero_span = "0".repeat(16);
        for bad in [
            format!("00-{zero_trace}-{SPAN}-01"),
            format!("00-{TRACE}-{zero_span}-01"),
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
            format!("ff-{TRACE}-{SPAN}-01"),
            format!("00-{TRACE}-{SPAN}-01-extra"),
            format!("00-{TRACE}-{SPAN}"),
            format!("00-{}-{SPAN}-01", &TRACE[..30]),
            format!("00-{TRACE}-{SPAN}-0x"),
            "".into(),
        ] {
            let got = extract(&headers(&[(TRACEPARENT, &bad), (TRACESTATE, "k=v")]));
            assert_eq!(got, Incoming::default(), "{bad}");
        }
        // Two traceparents are as good as none.
        let twice = format!("00-{TRACE}-{SPAN}-01");
        let got = extract(&headers(&[(TRACEPARENT, &twice), (TRACEPARENT, &twice)]));
        assert_eq!(got.parent, None);
    }

    #[test]
    fn writes_what_came_in() {
        let state = HeaderValue::from_static("vendor=abc");
        let trace = TraceId::parse(TRACE, false).expect("valid");
        let span = SpanId([1, 2, 3, 4, 5, 6, 7, 8]);
        let parent = SpanId::parse(SPAN).expect("valid");
        let mut outgoing = Outgoing {
            trace_id: trace,
            span_id: span,
            parent_span_id: Some(parent),
            sampled: true,
            debug: false,
            tracestate: Some(&state),
            b3: Some(B3Style::Single),
        };
        let mut map = headers(&[(B3_SAMPLED, "1"), (TRACEPARENT, "junk")]);
        inject(&mut map, &outgoing);
        assert_eq!(
            map[TRACEPARENT],
            format!("00-{TRACE}-0102030405060708-01").as_str()
        );
        assert_eq!(map[TRACESTATE], "vendor=abc");
        assert_eq!(
            map[B3],
            format!("{TRACE}-0102030405060708-1-{SPAN}").as_str()
        );
        assert!(!map.contains_key(B3_SAMPLED));

        outgoing.sampled = false;
        outgoing.b3 = Some(B3Style::Multi);
        outgoing.tracestate = None;
        inject(&mut map, &outgoing);
        assert_eq!(map[B3_TRACE_ID], TRACE);
        assert_eq!(map[B3_SPAN_ID], "0102030405060708");
        assert_eq!(map[B3_PARENT_SPAN_ID], SPAN);
        assert_eq!(map[B3_SAMPLED], "0");
        assert!(!map.contains_key(B3) && !map.contains_key(TRACESTATE));
        assert!(map[TRACEPARENT].to_str().expect("valid").ends_with("-00"));

        // What is written reads back as the same context.
        let read = extract(&map);
        assert_eq!(read.parent, Some((trace, span)));
        assert_eq!(read.sampled, Some(false));
    }

    #[test]
    fn tracestate_headers_are_combined_within_the_limit() {
        let traceparent = format!("00-{TRACE}-{SPAN}-01");
        let got = extract(&headers(&[
            (TRACEPARENT, &traceparent),
            (TRACESTATE, "a=1, b=2"),
            (TRACESTATE, "c=3"),
        ]));
        assert_eq!(got.tracestate.expect("kept"), "a=1,b=2,c=3");
        // Over 512: members over 128 characters go first, then members from the end.
        let long = format!("big={}", "x".repeat(200));
        let many: Vec<String> = (0..60).map(|i| format!("k{i:02}=v")).collect();
        let value = format!("{long},{}", many.join(","));
        let got = extract(&headers(&[
            (TRACEPARENT, &traceparent),
            (TRACESTATE, &value),
        ]));
        let kept = got.tracestate.expect("kept");
        let kept = kept.to_str().expect("text");
        assert!(kept.len() <= MAX_TRACESTATE, "{}", kept.len());
        assert!(
            kept.starts_with("k00=v,k01=v") && !kept.contains("big="),
            "{kept}"
        );
    }

    #[test]
    fn b3_ids_must_be_hex_and_debug_is_written_back() {
        let signed = format!("+{}", &SPAN[1..]);
        for (trace, span) in [(TRACE, signed.as_str()), ("+a3ce929d0e0e473", SPAN)] {
            let got = extract(&headers(&[(B3, &format!("{trace}-{span}-1"))]));
            assert_eq!(got.parent, None, "{trace}-{span}");
        }
        let got = extract(&headers(&[(B3_FLAGS, "1")]));
        assert_eq!(
            (got.b3, got.sampled, got.debug),
            (Some(B3Style::Multi), Some(true), true)
        );
        let got = extract(&headers(&[(B3, &format!("{TRACE}-{SPAN}-d"))]));
        assert!(got.debug);
        let (trace, span) = got.parent.expect("ids");
        let mut map = HeaderMap::new();
        let outgoing = Outgoing {
            trace_id: trace,
            span_id: span,
            parent_span_id: None,
            sampled: true,
            debug: true,
            tracestate: None,
            b3: Some(B3Style::Single),
        };
        inject(&mut map, &outgoing);
        assert_eq!(map[B3], format!("{TRACE}-{SPAN}-d").as_str());
        inject(
            &mut map,
            &Outgoing {
                b3: Some(B3Style::Multi),
                ..outgoing
            },
        );
        assert_eq!(map[B3_FLAGS], "1");
        assert!(!map.contains_key(B3_SAMPLED));
    }
}
