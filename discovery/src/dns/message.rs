//! DNS messages on the wire: the one kind of query we answer, parsed by hand, and responses
//! assembled from prepared RRsets.
//!
//! Parsing is strict and allocation-free. Anything but a standard query with one question (and
//! at most an EDNS OPT record) is answered with FORMERR or NOTIMP; a message that is itself a
//! response, or too short to carry a header, gets no answer at all, so that we can never be
//! made to reply to a reply.

use super::zone::{Lookup, ZoneSet};

const HEADER_LEN: usize = 12;
const TYPE_OPT: u16 = 41;
const TYPE_IXFR: u16 = 251;
const TYPE_AXFR: u16 = 252;
const CLASS_IN: u16 = 1;
/// The largest UDP answer we offer EDNS clients (the 2020 DNS flag day value).
pub(crate) const MAX_UDP_PAYLOAD: u16 = 1232;
/// A client without EDNS may receive no more than this over UDP (RFC 1035).
const PLAIN_UDP_PAYLOAD: usize = 512;

/// Response codes we send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rcode {
    NoError = 0,
    FormErr = 1,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
    /// EDNS version not supported (RFC 6891): twelve bits, the upper eight in the OPT record.
    BadVers = 16,
}

/// The transport a query came over, which bounds the response's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

/// A parsed query: the parts the answer depends on.
struct Query<'a> {
    id: u16,
    /// The RD bit, copied into the response as RFC 1035 requires.
    recursion_desired: bool,
    /// The question section exactly as received (name, type, class): echoed back verbatim.
    question: &'a [u8],
    qtype: u16,
    qclass: u16,
    edns: Option<Edns>,
}

#[derive(Clone, Copy)]
struct Edns {
    payload: u16,
    version: u8,
}

/// Why a message is not a query we answer.
enum Malformed {
    /// Not worth an answer: a response, or shorter than a header.
    Drop,
    /// Answered with this code, echoing the header's ID.
    Answer(Rcode),
}

/// Writes the response to `message` into `out` (cleared first). Returns the response code, or
/// `None` when the message gets no response at all.
pub(crate) fn respond(
    zones: &ZoneSet,
    message: &[u8],
    transport: Transport,
    out: &mut Vec<u8>,
) -> Option<Rcode> {
    out.clear();
    let query = match parse(message) {
        Ok(query) => query,
        Err(Malformed::Drop) => return None,
        Err(Malformed::Answer(rcode)) => {
            error_response(message, rcode, out);
            return Some(rcode);
        }
    };
    if query.edns.is_some_and(|edns| edns.version != 0) {
        header(out, &query, 0, Rcode::BadVers, [0, 0]);
        out.extend_from_slice(query.question);
        opt(out, (Rcode::BadVers as u16 >> 4) as u8);
        return Some(Rcode::BadVers);
    }
    let mut qname = [0u8; 255];
    let qname = lowercase_name(query.question, &mut qname);
    // Zone transfers are not offered: the zones are rebuilt from the catalog, not copied.
    let transfer = matches!(query.qtype, TYPE_IXFR | TYPE_AXFR);
    let lookup = if query.qclass == CLASS_IN && !transfer {
        zones.lookup(qname, query.qtype)
    } else {
        Lookup::Refused
    };
    let (rcode, mut answer, mut authority) = match lookup {
        Lookup::Refused => (Rcode::Refused, None, None),
        Lookup::NxDomain { soa } => (Rcode::NxDomain, None, Some(soa)),
        Lookup::NoData { soa } => (Rcode::NoError, None, Some(soa)),
        Lookup::Answer(rrset) => (Rcode::NoError, Some(rrset), None),
    };
    let authoritative = rcode != Rcode::Refused;
    let limit = match (transport, query.edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, Some(edns)) => usize::from(edns.payload.clamp(512, MAX_UDP_PAYLOAD)),
        (Transport::Udp, None) => PLAIN_UDP_PAYLOAD,
    };
    let opt_len = if query.edns.is_some() { 11 } else { 0 };
    let body_len = answer.map_or(0, |r| r.bytes.len()) + authority.map_or(0, <[u8]>::len);
    let truncated = HEADER_LEN + query.question.len() + body_len + opt_len > limit;
    if truncated {
        (answer, authority) = (None, None);
    }
    let mut flags = 0;
    if authoritative {
        flags |= 0x0400;
    }
    if truncated {
        flags |= 0x0200;
    }
    let counts = [
        answer.map_or(0, |r| r.count),
        u16::from(authority.is_some()),
    ];
    header(out, &query, flags, rcode, counts);
    out.extend_from_slice(query.question);
    if let Some(rrset) = answer {
        out.extend_from_slice(&rrset.bytes);
    }
    if let Some(soa) = authority {
        out.extend_from_slice(soa);
    }
    if query.edns.is_some() {
        opt(out, 0);
    }
    Some(rcode)
}

/// The response header: ID and RD from the query, QR set, one question, the given answer and
/// authority counts, and an additional record if the query had EDNS.
fn header(out: &mut Vec<u8>, query: &Query<'_>, flags: u16, rcode: Rcode, counts: [u16; 2]) {
    let mut flags = flags | 0x8000 | (rcode as u16 & 0xf);
    if query.recursion_desired {
        flags |= 0x0100;
    }
    out.extend_from_slice(&query.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&counts[0].to_be_bytes());
    out.extend_from_slice(&counts[1].to_be_bytes());
    out.extend_from_slice(&u16::from(query.edns.is_some()).to_be_bytes());
}

fn parse(message: &[u8]) -> Result<Query<'_>, Malformed> {
    let Some(header) = message.get(..HEADER_LEN) else {
        return Err(Malformed::Drop);
    };
    let word = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let flags = word(2);
    if flags & 0x8000 != 0 {
        return Err(Malformed::Drop);
    }
    if (flags >> 11) & 0xf != 0 {
        return Err(Malformed::Answer(Rcode::NotImp));
    }
    let (qdcount, ancount, nscount, arcount) = (word(4), word(6), word(8), word(10));
    if qdcount != 1 || ancount != 0 || nscount != 0 || arcount > 1 {
        return Err(Malformed::Answer(Rcode::FormErr));
    }
    let formerr = Malformed::Answer(Rcode::FormErr);
    let name_end = name_end(message, HEADER_LEN).ok_or(Malformed::Answer(Rcode::FormErr))?;
    let question = message.get(HEADER_LEN..name_end + 4).ok_or(formerr)?;
    let qtype = u16::from_be_bytes([message[name_end], message[name_end + 1]]);
    let qclass = u16::from_be_bytes([message[name_end + 2], message[name_end + 3]]);
    let edns = if arcount == 1 {
        Some(parse_opt(&message[name_end + 4..]).ok_or(Malformed::Answer(Rcode::FormErr))?)
    } else {
        None
    };
    Ok(Query {
        id: word(0),
        recursion_desired: flags & 0x0100 != 0,
        question,
        qtype,
        qclass,
        edns,
    })
}

/// The offset just past an uncompressed name starting at `at`, if it is well formed.
fn name_end(message: &[u8], at: usize) -> Option<usize> {
    let mut at = at;
    let start = at;
    loop {
        let length = usize::from(*message.get(at)?);
        if length == 0 {
            let end = at + 1;
            return (end - start <= 255).then_some(end);
        }
        // Compression (0xc0) and the obsolete extended label types (0x40, 0x80) have no place
        // in the first name of a query.
        if length > 63 {
            return None;
        }
        at += 1 + length;
    }
}

/// The EDNS OPT record, the only additional record we accept.
fn parse_opt(record: &[u8]) -> Option<Edns> {
    // Root owner, type, class (the payload size), TTL (extended rcode, version, flags), RDLENGTH.
    let [0, t0, t1, p0, p1, _, version, _, _, l0, l1, ref rest @ ..] = *record else {
        return None;
    };
    if u16::from_be_bytes([t0, t1]) != TYPE_OPT {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([l0, l1]));
    if rest.len() < length {
        return None;
    }
    Some(Edns {
        payload: u16::from_be_bytes([p0, p1]),
        version,
    })
}

/// Copies the question's name into `buf` in lower case; returns the copy.
fn lowercase_name<'b>(question: &[u8], buf: &'b mut [u8; 255]) -> &'b [u8] {
    // The question ends with type and class; the name is everything before them, at most 255
    // bytes (checked by `name_end`).
    let name = &question[..question.len() - 4];
    let copy = &mut buf[..name.len()];
    copy.copy_from_slice(name);
    copy.make_ascii_lowercase();
    copy
}

/// An OPT record: our payload size, no options. `extended` is the upper eight bits of a
/// twelve-bit response code (1 for BADVERS).
fn opt(out: &mut Vec<u8>, extended: u8) {
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
    out.extend_from_slice(&[extended, 0, 0, 0]);
    out.extend_from_slice(&0u16.to_be_bytes());
}

/// A response with no sections but the header, for a query we cannot parse.
fn error_response(message: &[u8], rcode: Rcode, out: &mut Vec<u8>) {
    let id = [message[0], message[1]];
    let recursion_desired = message[2] & 0x01;
    let opcode = message[2] & 0x78;
    out.extend_from_slice(&id);
    out.push(0x80 | opcode | recursion_desired);
    out.push(rcode as u8);
    out.extend_from_slice(&[0; 8]);
}
