//! Fault injection: a fixed delay, or an answer the gateway makes up, for a share of requests.

use std::time::Duration;

use http::StatusCode;

use super::dice::{Chance, Dice};

/// The faults a route injects. Delay and abort are rolled independently: a request can be
/// delayed and then aborted, as in Istio.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fault {
    /// Hold the request this long before forwarding it.
    pub delay: Option<Delay>,
    /// Answer instead of forwarding.
    pub abort: Option<Abort>,
}

/// A delay for a share of requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delay {
    /// How long.
    pub duration: Duration,
    /// For which share.
    pub chance: Chance,
}

/// An abort for a share of requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abort {
    /// The answer.
    pub status: AbortStatus,
    /// For which share.
    pub chance: Chance,
}

/// What an aborted request is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortStatus {
    /// An HTTP status (400 to 599).
    Http(StatusCode),
    /// A gRPC status code (1 to 16), in a trailers-only response with HTTP status 200.
    Grpc(u8),
}

/// The faults drawn for one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    /// The delay to hold the request for.
    pub delay: Option<Duration>,
    /// The answer to give instead of forwarding.
    pub abort: Option<AbortStatus>,
}

impl Fault {
    /// Whether this injects nothing.
    pub fn is_empty(&self) -> bool {
        self.delay.is_none() && self.abort.is_none()
    }

    /// Draws this request's faults.
    pub fn roll(&self, dice: &mut impl Dice) -> Injected {
        Injected {
            delay: self
                .delay
                .filter(|d| dice.chance(d.chance))
                .map(|d| d.duration),
            abort: self
                .abort
                .filter(|a| dice.chance(a.chance))
                .map(|a| a.status),
        }
    }
}

/// The gRPC status codes by their canonical names, as a config names them.
pub const GRPC_CODES: [(&str, u8); 16] = [
    ("CANCELLED", 1),
    ("UNKNOWN", 2),
    ("INVALID_ARGUMENT", 3),
    ("DEADLINE_EXCEEDED", 4),
    ("NOT_FOUND", 5),
    ("ALREADY_EXISTS", 6),
    ("PERMISSION_DENIED", 7),
    ("RESOURCE_EXHAUSTED", 8),
    ("FAILED_PRECONDITION", 9),
    ("ABORTED", 10),
    ("OUT_OF_RANGE", 11),
    ("UNIMPLEMENTED", 12),
    ("INTERNAL", 13),
    ("UNAVAILABLE", 14),
    ("DATA_LOSS", 15),
    ("UNAUTHENTICATED", 16),
];
