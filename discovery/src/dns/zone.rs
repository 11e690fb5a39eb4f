//! Zones prepared for answering: every RRset encoded in wire format when the snapshot is
//! built, so that answering a query is a hash lookup and a copy.

use std::collections::BTreeMap;

use foldhash::HashMap;

use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

/// The class of every record we serve.
const CLASS_IN: u16 = 1;
/// A compression pointer to the question's name, which always starts at offset 12: answer
/// records point their owner there, so that a client's own spelling (0x20 case
/// randomisation) is what it reads back.
const OWNER_IS_QUESTION: [u8; 2] = [0xc0, 0x0c];

/// Every zone the server is authoritative for, prepared for answering. Immutable: a change
/// builds a new set, published whole.
#[derive(Clone, Debug, Default)]
pub struct ZoneSet {
    zones: Vec<Zone>,
    /// Every name in every zone (empty non-terminals included), lower-case wire form.
    names: HashMap<Box<[u8]>, Node>,
}

/// One zone, prepared.
#[derive(Clone, Debug)]
struct Zone {
    /// The apex, lower-case wire form.
    origin: Box<[u8]>,
    /// The SOA record with its owner written out, for the authority section of negative
    /// answers.
    soa: Box<[u8]>,
}

/// A name that exists: its RRsets, by type.
#[derive(Clone, Debug)]
struct Node {
    /// Which zone in [`ZoneSet::zones`] the name belongs to.
    zone: usize,
    rrsets: Vec<RrSet>,
}

/// Records of one name and type, encoded back to back with [`OWNER_IS_QUESTION`] as owner.
#[derive(Clone, Debug)]
pub(crate) struct RrSet {
    rtype: u16,
    pub(crate) count: u16,
    pub(crate) bytes: Box<[u8]>,
}

/// What a zone set says about one name and type.
#[derive(Debug)]
pub(crate) enum Lookup<'a> {
    /// Not in any of our zones.
    Refused,
    /// In a zone, but no such name: the zone's SOA goes in the authority section.
    NxDomain { soa: &'a [u8] },
    /// The name exists but has no records of the type.
    NoData { soa: &'a [u8] },
    /// The records.
    Answer(&'a RrSet),
}

/// Records for one zone, collected before it is prepared.
#[derive(Debug)]
pub struct ZoneBuilder {
    origin: Name,
    ttl: u32,
    soa: SOA,
    ns: Name,
    /// By lower-case name text (`a.b.`): hashing strings is far cheaper than ordering `Name`s,
    /// which compare label by label.
    records: HashMap<String, Owner>,
}

/// The records of one name.
#[derive(Debug)]
struct Owner {
    name: Name,
    sets: BTreeMap<RecordType, Vec<RData>>,
}

/// A zone could not be built from the names given.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// A name is not a valid DNS name.
    #[error("{name:?} is not a valid DNS name: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// Why it is not valid.
        reason: String,
    },
    /// A record was added outside the zone's origin.
    #[error("{name} is outside zone {origin}")]
    OutOfZone {
        /// The record's name.
        name: String,
        /// The zone's origin.
        origin: String,
    },
    /// A record could not be encoded (an RRset too large for a DNS message, for one).
    #[error("cannot encode the records of {name}: {reason}")]
    Encode {
        /// The records' name.
        name: String,
        /// Why.
        reason: String,
    },
}

// === impl ZoneSet ===

impl ZoneSet {
    /// Prepares zones for answering. A name in two zones belongs to the more specific one.
    pub fn new(zones: Vec<ZoneBuilder>) -> Result<Self, ZoneError> {
        let mut zones = zones;
        // Most labels last, so that a nested zone's names overwrite its parent's.
        zones.sort_by_key(|z| z.origin.num_labels());
        let mut set = ZoneSet::default();
        for builder in zones {
            let index = set.zones.len();
            let zone = builder.prepare(index, &mut set.names)?;
            set.zones.push(zone);
        }
        Ok(set)
    }

    /// Looks up `qname` (lower-case wire form) and `qtype`.
    pub(crate) fn lookup(&self, qname: &[u8], qtype: u16) -> Lookup<'_> {
        if let Some(node) = self.names.get(qname) {
            let soa = &self.zones[node.zone].soa;
            let rrset = if qtype == u16::from(RecordType::ANY) {
                // RFC 8482: one RRset is a complete answer to ANY, and keeps answers small.
                node.rrsets.first()
            } else {
                node.rrsets.iter().find(|r| r.rtype == qtype)
            };
            return match rrset {
                Some(rrset) => Lookup::Answer(rrset),
                None => Lookup::NoData { soa },
            };
        }
        // The most specific zone that holds the name; zones are sorted least specific first.
        match self
            .zones
            .iter()
            .rev()
            .find(|zone| is_within(qname, &zone.origin))
        {
            Some(zone) => Lookup::NxDomain { soa: &zone.soa },
            None => Lookup::Refused,
        }
    }

    /// How many names the set holds, empty non-terminals included.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the set holds no zone at all.
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }
}

// === impl ZoneBuilder ===

impl ZoneBuilder {
    /// An empty zone at `origin` (e.g. `clusterset.local`) whose records carry `ttl` seconds.
    /// The SOA names `ns.<origin>` as primary; `serial` should grow with every change.
    pub fn new(origin: &str, ttl: u32, serial: u32) -> Result<Self, ZoneError> {
        let origin = fqdn(origin)?;
        let ns = fqdn(&format!("ns.{origin}"))?;
        let hostmaster = fqdn(&format!("hostmaster.{origin}"))?;
        // refresh, retry, expire matter only to secondaries; minimum is the negative-answer TTL.
        let soa = SOA::new(ns.clone(), hostmaster, serial, 3600, 600, 86400, ttl);
        Ok(ZoneBuilder {
            origin,
            ttl,
            soa,
            ns,
            records: HashMap::default(),
        })
    }

    /// The zone's apex.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// Adds a record at `name`, which must be in the zone (case is ignored). Adding the same
    /// record twice keeps one.
    pub fn add(&mut self, name: &str, rdata: RData) -> Result<(), ZoneError> {
        let mut key = name.to_ascii_lowercase();
        if !key.ends_with('.') {
            key.push('.');
        }
        let origin = self.origin.to_ascii();
        let inside = key == origin
            || key
                .strip_suffix(origin.as_str())
                .is_some_and(|rest| rest.ends_with('.'));
        if !inside {
            return Err(ZoneError::OutOfZone {
                name: name.to_owned(),
                origin,
            });
        }
        let owner = match self.records.entry(key) {
            std::collections::hash_map::Entry::Occupied(owner) => owner.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let name = fqdn(slot.key())?;
                slot.insert(Owner {
                    name,
                    sets: BTreeMap::new(),
                })
            }
        };
        let set = owner.sets.entry(rdata.record_type()).or_default();
        if !set.contains(&rdata) {
            set.push(rdata);
        }
        Ok(())
    }

    /// The zone in master-file format (RFC 1035 section 5): for another server to load the
    /// same records (the benchmark's Knot DNS does), and for a person to read.
    pub fn zone_file(&self) -> String {
        use std::fmt::Write as _;
        let mut text = format!("$ORIGIN {}\n$TTL {}\n", self.origin, self.ttl);
        let _ = writeln!(text, "{} IN SOA {}", self.origin, self.soa);
        let _ = writeln!(text, "{} IN NS {}", self.origin, self.ns);
        let mut owners: Vec<&Owner> = self.records.values().collect();
        owners.sort_by(|a, b| a.name.cmp(&b.name));
        for Owner { name, sets } in owners {
            for rdata in sets.values().flatten() {
                let data = match rdata {
                    RData::TXT(txt) => txt
                        .txt_data
                        .iter()
                        .map(|s| format!("\"{}\"", String::from_utf8_lossy(s)))
                        .collect::<Vec<_>>()
                        .join(" "),
                    other => other.to_string(),
                };
                let _ = writeln!(text, "{name} IN {} {data}", rdata.record_type());
            }
        }
        text
    }

    fn prepare(
        mut self,
        index: usize,
        names: &mut HashMap<Box<[u8]>, Node>,
    ) -> Result<Zone, ZoneError> {
        let origin_key = self.origin.to_ascii();
        let apex = match self.records.entry(origin_key) {
            std::collections::hash_map::Entry::Occupied(owner) => owner.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => slot.insert(Owner {
                name: self.origin.clone(),
                sets: BTreeMap::new(),
            }),
        };
        apex.sets
            .insert(RecordType::SOA, vec![RData::SOA(self.soa.clone())]);
        apex.sets
            .insert(RecordType::NS, vec![RData::NS(NS(self.ns.clone()))]);
        let soa = encode_record(&self.origin, self.ttl, &RData::SOA(self.soa.clone()))?;
        let origin = wire(&self.origin)?;
        for Owner { name, sets } in self.records.values() {
            let rrsets = sets
                .iter()
                .map(|(rtype, rdatas)| encode_rrset(name, *rtype, self.ttl, rdatas))
                .collect::<Result<_, _>>()?;
            let key = wire(name)?;
            // Empty non-terminals exist too: a query for one gets NODATA, not NXDOMAIN. Their
            // wire forms are the suffixes of this name's at label boundaries.
            let mut at = 0;
            while key[at..] != *origin {
                at += 1 + usize::from(key[at]);
                let ancestor = &key[at..];
                if *ancestor == *origin {
                    break;
                }
                // Seen already in this zone, and so were its own ancestors.
                if names.get(ancestor).is_some_and(|node| node.zone == index) {
                    break;
                }
                names.insert(
                    ancestor.into(),
                    Node {
                        zone: index,
                        rrsets: Vec::new(),
                    },
                );
            }
            names.insert(
                key,
                Node {
                    zone: index,
                    rrsets,
                },
            );
        }
        Ok(Zone { origin, soa })
    }
}

// === helpers ===

/// `name` as an absolute, lower-case DNS name.
pub(crate) fn fqdn(name: &str) -> Result<Name, ZoneError> {
    let bad = |reason: String| ZoneError::BadName {
        name: name.to_owned(),
        reason,
    };
    let mut parsed = Name::from_ascii(name).map_err(|e| bad(e.to_string()))?;
    parsed.set_fqdn(true);
    Ok(parsed.to_lowercase())
}

/// A name in lower-case, uncompressed wire form.
fn wire(name: &Name) -> Result<Box<[u8]>, ZoneError> {
    let mut bytes = Vec::with_capacity(name.len() + 2);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_name_encoding(NameEncoding::UncompressedLowercase);
    name.emit(&mut encoder)
        .map_err(|e| encode_error(name, e.to_string()))?;
    Ok(bytes.into_boxed_slice())
}

fn encode_rrset(
    name: &Name,
    rtype: RecordType,
    ttl: u32,
    rdatas: &[RData],
) -> Result<RrSet, ZoneError> {
    let mut bytes = Vec::new();
    for rdata in rdatas {
        bytes.extend_from_slice(&OWNER_IS_QUESTION);
        encode_fields(name, ttl, rdata, &mut bytes)?;
    }
    let count = u16::try_from(rdatas.len())
        .ok()
        .filter(|_| bytes.len() < usize::from(u16::MAX))
        .ok_or_else(|| encode_error(name, format!("{} {rtype} records", rdatas.len())))?;
    Ok(RrSet {
        rtype: rtype.into(),
        count,
        bytes: bytes.into_boxed_slice(),
    })
}

/// One record with its owner written out in full.
fn encode_record(name: &Name, ttl: u32, rdata: &RData) -> Result<Box<[u8]>, ZoneError> {
    let mut bytes = wire(name)?.into_vec();
    encode_fields(name, ttl, rdata, &mut bytes)?;
    Ok(bytes.into_boxed_slice())
}

/// Type, class, TTL, and length-prefixed RDATA with uncompressed names (they are copied into
/// messages at any offset, so no compression pointer may appear inside them).
fn encode_fields(
    name: &Name,
    ttl: u32,
    rdata: &RData,
    bytes: &mut Vec<u8>,
) -> Result<(), ZoneError> {
    let mut data = Vec::new();
    let mut encoder = BinEncoder::new(&mut data);
    encoder.set_name_encoding(NameEncoding::UncompressedLowercase);
    rdata
        .emit(&mut encoder)
        .map_err(|e| encode_error(name, e.to_string()))?;
    let length = u16::try_from(data.len())
        .map_err(|_| encode_error(name, format!("{} bytes of data", data.len())))?;
    bytes.extend_from_slice(&u16::from(rdata.record_type()).to_be_bytes());
    bytes.extend_from_slice(&CLASS_IN.to_be_bytes());
    bytes.extend_from_slice(&ttl.to_be_bytes());
    bytes.extend_from_slice(&length.to_be_bytes());
    bytes.extend_from_slice(&data);
    Ok(())
}

fn encode_error(name: &Name, reason: String) -> ZoneError {
    ZoneError::Encode {
        name: name.to_string(),
        reason,
    }
}

/// Whether wire-form `name` is `origin` or below it. Walks label boundaries, so that
/// `xclusterset.local` is not taken for a name in `clusterset.local`.
fn is_within(name: &[u8], origin: &[u8]) -> bool {
    let mut at = 0;
    while at < name.len() {
        if name[at..] == *origin {
            return true;
        }
        let length = usize::from(name[at]);
        if length == 0 {
            return false;
        }
        at += 1 + length;
    }
    false
}
