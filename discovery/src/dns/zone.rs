//! Zones prepared for answering: every RRset encoded in wire format ahead of time, so that
//! answering a query is a hash lookup and a copy; and kept up to date incrementally, so that a
//! change to one service re-encodes only that service's names.
//!
//! [`LiveZones`] holds the records, grouped (one group per service, one for the zones' own
//! records). [`LiveZones::set_group`] replaces a group; [`LiveZones::commit`] bumps the SOA
//! serial and returns a new [`ZoneSet`] snapshot. A snapshot's names are split into shards by
//! hash; a commit rebuilds only the shards whose names changed and shares the others with the
//! previous snapshot, so readers of the old one are never disturbed and a commit costs what
//! changed, not the size of the zone.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::Arc;

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
/// Shards per snapshot: enough that one service's change touches a small part of a large
/// zone, few enough that a small zone is not all overhead.
const SHARDS: usize = 4096;

/// Every zone the server is authoritative for, prepared for answering. Immutable.
#[derive(Clone, Debug)]
pub struct ZoneSet {
    zones: Arc<[Zone]>,
    shards: Arc<[Arc<Shard>]>,
    hasher: foldhash::fast::FixedState,
}

/// One zone's apex and negative-answer SOA.
#[derive(Clone, Debug)]
struct Zone {
    /// The apex, lower-case wire form.
    origin: Box<[u8]>,
    /// The SOA record with its owner written out, for the authority section of negative
    /// answers.
    soa: Box<[u8]>,
}

/// Some of the names, by lower-case wire form.
#[derive(Clone, Debug, Default)]
struct Shard {
    names: HashMap<Box<[u8]>, Node>,
}

/// A name that exists (empty non-terminals included): its RRsets, by type.
#[derive(Clone, Debug)]
struct Node {
    /// Which zone the name belongs to.
    zone: usize,
    rrsets: Vec<RrSet>,
}

/// A name's node as a commit leaves it: `None` when the name no longer exists.
type NodeChange = (Box<[u8]>, Option<Node>);

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

/// The records of a set of zones, kept up to date group by group.
#[derive(Debug)]
pub struct LiveZones {
    zones: Vec<ZoneSpec>,
    ttl: u32,
    serial: u32,
    groups: HashMap<String, Vec<(String, RData)>>,
    owners: HashMap<String, Owner>,
    /// How many names lie below each name: an empty non-terminal exists while this is above
    /// zero.
    below: HashMap<String, u32>,
    /// Names whose node must be encoded again at the next commit.
    dirty: BTreeSet<String>,
    shards: Arc<[Arc<Shard>]>,
    hasher: foldhash::fast::FixedState,
}

#[derive(Debug)]
struct ZoneSpec {
    origin: Name,
    /// Lower-case text with the final dot, as names are keyed.
    key: String,
    ns: Name,
    hostmaster: Name,
}

/// The records of one name.
#[derive(Debug)]
struct Owner {
    name: Name,
    zone: usize,
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
    /// A record is outside every zone.
    #[error("{name} is outside every zone served")]
    OutOfZone {
        /// The record's name.
        name: String,
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
    /// Looks up `qname` (lower-case wire form) and `qtype`.
    pub(crate) fn lookup(&self, qname: &[u8], qtype: u16) -> Lookup<'_> {
        let shard = &self.shards[shard_of(&self.hasher, qname)];
        if let Some(node) = shard.names.get(qname) {
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
        // The most specific zone that holds the name.
        match self
            .zones
            .iter()
            .filter(|zone| is_within(qname, &zone.origin))
            .max_by_key(|zone| zone.origin.len())
        {
            Some(zone) => Lookup::NxDomain { soa: &zone.soa },
            None => Lookup::Refused,
        }
    }

    /// How many names the set holds, empty non-terminals included.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.names.len()).sum()
    }

    /// Whether the set holds no name at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// === impl LiveZones ===

impl LiveZones {
    /// Zones at `origins` (e.g. `clusterset.local`) with no records yet but their SOA and NS,
    /// whose records carry `ttl` seconds, starting at SOA serial `serial`. Each SOA names
    /// `ns.<origin>` as primary.
    pub fn new(origins: &[&str], ttl: u32, serial: u32) -> Result<Self, ZoneError> {
        let mut zones = Vec::with_capacity(origins.len());
        for origin in origins {
            let origin = fqdn(origin)?;
            zones.push(ZoneSpec {
                key: origin.to_ascii(),
                ns: fqdn(&format!("ns.{origin}"))?,
                hostmaster: fqdn(&format!("hostmaster.{origin}"))?,
                origin,
            });
        }
        let mut live = LiveZones {
            zones,
            ttl,
            serial,
            groups: HashMap::default(),
            owners: HashMap::default(),
            below: HashMap::default(),
            dirty: BTreeSet::new(),
            shards: (0..SHARDS).map(|_| Arc::new(Shard::default())).collect(),
            hasher: foldhash::fast::FixedState::with_seed(u64::from(serial)),
        };
        let apexes: Vec<String> = live.zones.iter().map(|z| z.key.clone()).collect();
        live.dirty.extend(apexes);
        Ok(live)
    }

    /// Replaces the records of `group` (a service, say) with `records`: `(name, data)` pairs,
    /// each name in one of the zones. On error nothing changes.
    pub fn set_group(
        &mut self,
        group: &str,
        records: Vec<(String, RData)>,
    ) -> Result<(), ZoneError> {
        let mut checked = Vec::with_capacity(records.len());
        for (name, rdata) in records {
            let key = key_of(&name);
            let zone = self
                .zone_of(&key)
                .ok_or(ZoneError::OutOfZone { name: name.clone() })?;
            checked.push((key, zone, rdata));
        }
        // Names are parsed before anything is touched, so that an error changes nothing.
        let mut parsed = HashMap::default();
        for (key, _, _) in &checked {
            if !self.owners.contains_key(key) && !parsed.contains_key(key) {
                parsed.insert(key.clone(), fqdn(key)?);
            }
        }
        if let Some(old) = self.groups.remove(group) {
            for (key, rdata) in old {
                self.remove(&key, &rdata);
            }
        }
        let mut kept = Vec::with_capacity(checked.len());
        for (key, zone, rdata) in checked {
            if !self.owners.contains_key(&key) {
                let name = parsed.remove(&key).map_or_else(|| fqdn(&key), Ok)?;
                self.add_owner(&key, name, zone);
            }
            if let Some(owner) = self.owners.get_mut(&key) {
                let set = owner.sets.entry(rdata.record_type()).or_default();
                if !set.contains(&rdata) {
                    set.push(rdata.clone());
                }
            }
            self.dirty.insert(key.clone());
            kept.push((key, rdata));
        }
        if !kept.is_empty() {
            self.groups.insert(group.to_owned(), kept);
        }
        Ok(())
    }

    /// Takes the changes since the last commit into a new snapshot, with the next SOA serial.
    pub fn commit(&mut self) -> Result<ZoneSet, ZoneError> {
        self.serial = self.serial.wrapping_add(1).max(1);
        let apexes: Vec<String> = self.zones.iter().map(|z| z.key.clone()).collect();
        self.dirty.extend(apexes);
        let zones: Arc<[Zone]> = self
            .zones
            .iter()
            .map(|zone| {
                Ok(Zone {
                    origin: wire(&zone.origin)?,
                    soa: encode_record(&zone.origin, self.ttl, &RData::SOA(self.soa(zone)))?,
                })
            })
            .collect::<Result<_, ZoneError>>()?;
        // Each changed name's node, encoded, grouped by shard. A name that cannot be encoded
        // is left out of this snapshot, not the rest with it: the other changes are taken.
        let mut changes: BTreeMap<usize, Vec<NodeChange>> = BTreeMap::new();
        for key in std::mem::take(&mut self.dirty) {
            let (wire_name, node) = match self.encoded(&key) {
                Ok(encoded) => encoded,
                Err(error) => {
                    tracing::warn!(name = %key, %error, "name left out of the DNS zone");
                    continue;
                }
            };
            changes
                .entry(shard_of(&self.hasher, &wire_name))
                .or_default()
                .push((wire_name, node));
        }
        let mut shards: Vec<Arc<Shard>> = self.shards.to_vec();
        for (index, changed) in changes {
            let shard = Arc::make_mut(&mut shards[index]);
            for (wire_name, node) in changed {
                match node {
                    Some(node) => shard.names.insert(wire_name, node),
                    None => shard.names.remove(&wire_name),
                };
            }
        }
        self.shards = shards.into();
        Ok(ZoneSet {
            zones,
            shards: self.shards.clone(),
            hasher: self.hasher,
        })
    }

    /// The zone `zone` (by its index in the origins given to [`LiveZones::new`]) in
    /// master-file format (RFC 1035 section 5): for another server to load the same records
    /// (the benchmark's Knot DNS does), and for a person to read.
    pub fn zone_file(&self, zone: usize) -> String {
        use std::fmt::Write as _;
        let Some(spec) = self.zones.get(zone) else {
            return String::new();
        };
        let mut text = format!("$ORIGIN {}\n$TTL {}\n", spec.origin, self.ttl);
        let _ = writeln!(text, "{} IN SOA {}", spec.origin, self.soa(spec));
        let _ = writeln!(text, "{} IN NS {}", spec.origin, spec.ns);
        let mut owners: Vec<&Owner> = self.owners.values().filter(|o| o.zone == zone).collect();
        owners.sort_by(|a, b| a.name.cmp(&b.name));
        for owner in owners {
            for rdata in owner.sets.values().flatten() {
                let data = match rdata {
                    RData::TXT(txt) => txt
                        .txt_data
                        .iter()
                        .map(|s| format!("\"{}\"", String::from_utf8_lossy(s)))
                        .collect::<Vec<_>>()
                        .join(" "),
                    other => other.to_string(),
                };
                let _ = writeln!(text, "{} IN {} {data}", owner.name, rdata.record_type());
            }
        }
        text
    }

    fn soa(&self, zone: &ZoneSpec) -> SOA {
        // refresh, retry, expire matter only to secondaries; minimum is the negative TTL.
        SOA::new(
            zone.ns.clone(),
            zone.hostmaster.clone(),
            self.serial,
            3600,
            600,
            86400,
            self.ttl,
        )
    }

    /// The zone a name (keyed) belongs to: the most specific that holds it.
    fn zone_of(&self, key: &str) -> Option<usize> {
        self.zones
            .iter()
            .enumerate()
            .filter(|(_, zone)| {
                key == zone.key
                    || key
                        .strip_suffix(zone.key.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            })
            .max_by_key(|(_, zone)| zone.key.len())
            .map(|(index, _)| index)
    }

    fn add_owner(&mut self, key: &str, name: Name, zone: usize) {
        self.owners.insert(
            key.to_owned(),
            Owner {
                name,
                zone,
                sets: BTreeMap::new(),
            },
        );
        let apex = self.zones[zone].key.clone();
        for ancestor in ancestors(key, &apex) {
            let count = self.below.entry(ancestor.to_owned()).or_default();
            *count += 1;
            if *count == 1 {
                self.dirty.insert(ancestor.to_owned());
            }
        }
    }

    fn remove(&mut self, key: &str, rdata: &RData) {
        let Some(owner) = self.owners.get_mut(key) else {
            return;
        };
        self.dirty.insert(key.to_owned());
        if let Some(set) = owner.sets.get_mut(&rdata.record_type()) {
            set.retain(|r| r != rdata);
            if set.is_empty() {
                owner.sets.remove(&rdata.record_type());
            }
        }
        if !owner.sets.is_empty() {
            return;
        }
        let zone = owner.zone;
        self.owners.remove(key);
        let apex = self.zones[zone].key.clone();
        for ancestor in ancestors(key, &apex) {
            if let Some(count) = self.below.get_mut(ancestor) {
                *count -= 1;
                if *count == 0 {
                    self.below.remove(ancestor);
                    self.dirty.insert(ancestor.to_owned());
                }
            }
        }
    }

    /// The node for `key` as it is now: `None` when the name no longer exists.
    /// The wire name of `key` and its node as it is now.
    fn encoded(&self, key: &str) -> Result<NodeChange, ZoneError> {
        let name = match self.owners.get(key) {
            Some(owner) => owner.name.clone(),
            None => fqdn(key)?,
        };
        Ok((wire(&name)?, self.node(key, &name)))
    }

    /// The node of `key`, or `None` if nothing is at or below it. An RRset too large for a DNS
    /// message (an SRV set of a thousand endpoints) is left out of it, and logged; the name's
    /// other RRsets stay.
    fn node(&self, key: &str, name: &Name) -> Option<Node> {
        let apex = self.zones.iter().position(|z| z.key == key);
        let owner = self.owners.get(key);
        let below = self.below.get(key).is_some_and(|n| *n > 0);
        let zone = match (apex, owner) {
            (Some(zone), _) => zone,
            (None, Some(owner)) => owner.zone,
            (None, None) if below => self.zone_of(key)?,
            (None, None) => return None,
        };
        let mut sets: BTreeMap<RecordType, Vec<RData>> =
            owner.map(|o| o.sets.clone()).unwrap_or_default();
        if let Some(index) = apex {
            let spec = &self.zones[index];
            sets.insert(RecordType::SOA, vec![RData::SOA(self.soa(spec))]);
            sets.insert(RecordType::NS, vec![RData::NS(NS(spec.ns.clone()))]);
        }
        let rrsets = sets
            .iter()
            .filter_map(|(rtype, rdatas)| {
                encode_rrset(name, *rtype, self.ttl, rdatas)
                    .inspect_err(|error| {
                        tracing::warn!(%name, %rtype, %error, "records left out of the DNS zone");
                    })
                    .ok()
            })
            .collect();
        Some(Node { zone, rrsets })
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

/// How names are keyed: lower case, with the final dot.
fn key_of(name: &str) -> String {
    let mut key = name.to_ascii_lowercase();
    if !key.ends_with('.') {
        key.push('.');
    }
    key
}

/// The names strictly between `key` and the zone apex `apex` (both keyed).
fn ancestors<'a>(key: &'a str, apex: &str) -> impl Iterator<Item = &'a str> {
    let mut rest = key;
    let apex_len = apex.len();
    std::iter::from_fn(move || {
        let (_, parent) = rest.split_once('.')?;
        if parent.len() <= apex_len {
            return None;
        }
        rest = parent;
        Some(parent)
    })
}

fn shard_of(hasher: &foldhash::fast::FixedState, wire_name: &[u8]) -> usize {
    (hasher.hash_one(wire_name) as usize) % SHARDS
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
