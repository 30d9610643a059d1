//! Shadow traffic for full-link stress tests: a tag that rides on every request, hop to hop,
//! and sends storage to a shadow key space so load tests never touch live data.
//!
//! # The tag
//!
//! [`ShadowContext`] says "this request is shadow traffic" and may carry a test-run id. It lives
//! in a tokio task-local for the duration of one request ([`ShadowContext::scope`]); reading it
//! is one thread-local access ([`is_shadow`]). `tokio::spawn` does not carry task-locals, so use
//! [`spawn`] to keep the tag on spawned work.
//!
//! # Carriers
//!
//! - HTTP header `x-jupiter-shadow: 1` (Go Jupiter's marker), run id in `x-jupiter-shadow-run`;
//! - the same in W3C `baggage`: `jupiter.shadow=1,jupiter.shadow.run=<id>`;
//! - gRPC metadata under the same keys (gRPC metadata is HTTP/2 headers).
//!
//! [`ShadowLayer`] (servers, HTTP and tonic alike) extracts the tag into the request's scope,
//! applies the service's switch and answers with `x-jupiter-shadow-ack: <mode>`;
//! [`PropagateLayer`] (clients) writes the current tag onto outgoing requests; [`inject_grpc`]
//! is the same as a tonic interceptor.
//!
//! # The switch (`[shadow] mode`)
//!
//! | mode | shadow requests |
//! |---|---|
//! | `off` (default) | refused: HTTP 403, gRPC `PERMISSION_DENIED` |
//! | `on` | served; storage uses its shadow target |
//! | `watch` | observer mode: logged and counted, reads served from live data, writes refused |
//!
//! # Storage
//!
//! [`ShadowPolicy`] is what redis-client, objstore and cache consult: live traffic is untouched,
//! shadow traffic goes to the shadow target (a key prefix, or a separate store), and a shadow
//! request with no shadow target is refused — reads too, so shadow and live data never mix.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;

use crate::metrics::Metrics;

mod context;
mod layer;
mod policy;
mod switch;
#[cfg(test)]
mod tests;

pub use self::context::*;
pub use self::layer::*;
pub use self::policy::*;
pub use self::switch::*;

/// The shadow marker header (Go Jupiter's).
pub const HEADER: &str = "x-jupiter-shadow";
/// The test-run id header.
pub const RUN_HEADER: &str = "x-jupiter-shadow-run";
/// The acknowledgement a server sends back on shadow requests: its mode.
pub const ACK_HEADER: &str = "x-jupiter-shadow-ack";
/// The W3C baggage entry for the marker.
pub const BAGGAGE_KEY: &str = "jupiter.shadow";
/// The W3C baggage entry for the run id.
pub const BAGGAGE_RUN_KEY: &str = "jupiter.shadow.run";
/// Longest run id accepted from the wire.
pub const MAX_RUN_ID: usize = 64;

tokio::task_local! {
    static CURRENT: Option<ShadowContext>;
}

/// A service's shadow switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShadowMode {
    /// Shadow requests are refused.
    #[default]
    Off,
    /// Shadow requests are served against shadow storage.
    On,
    /// Shadow requests are logged and counted; reads served from live data, writes refused.
    Watch,
}

impl ShadowMode {
    /// `off`, `on` or `watch`.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowMode::Off => "off",
            ShadowMode::On => "on",
            ShadowMode::Watch => "watch",
        }
    }

    fn from_u8(v: u8) -> ShadowMode {
        match v {
            1 => ShadowMode::On,
            2 => ShadowMode::Watch,
            _ => ShadowMode::Off,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            ShadowMode::Off => 0,
            ShadowMode::On => 1,
            ShadowMode::Watch => 2,
        }
    }
}

/// The `[shadow]` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ShadowConfig {
    /// The switch. Default is `off`: a service must opt in to shadow traffic.
    pub mode: ShadowMode,
}
