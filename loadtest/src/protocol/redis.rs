//! Redis, through redis-client: a step is one command, its words templates.
//!
//! Hot path: [`Redis::execute`] renders each word into the worker's [`Scratch`] and copies it
//! into the command (the client takes its arguments owned).

use jupiter_core::BoxError;
use jupiter_core::shadow::ShadowContext;

use super::{Call, Protocol, Scratch};
use crate::error::Problem;
use crate::scenario::{Action, RunSection, Target};
use crate::stats::ErrorKind;

/// Multiplexed connections per Redis target unless the target says.
const DEFAULT_CONNECTIONS: usize = 4;

/// A Redis target.
#[derive(Debug)]
pub(crate) struct Redis {
    client: redis_client::Client,
    /// The server keeps shadow keys apart (objstore's RESP port, by connection name): commands
    /// go out as written, not under redis-client's shadow mapping.
    server_side: bool,
}

impl Protocol for Redis {
    async fn connect(target: &Target, run: &RunSection) -> Result<Self, BoxError> {
        let spec = &target.spec;
        let mut b = redis_client::Client::builder()
            .url(spec.url.as_deref().unwrap_or_default())
            .name(&target.name)
            .pool_size(spec.connections.unwrap_or(DEFAULT_CONNECTIONS))
            .command_timeout(run.timeout);
        if let Some(p) = &spec.shadow_prefix {
            b = b.shadow_prefix(p);
        }
        if let Some(name) = &spec.shadow_name {
            b = b.client_name(name);
        }
        Ok(Redis {
            client: b.build()?,
            server_side: spec.shadow_name.is_some(),
        })
    }

    async fn probe(&self, target: &Target, _context: &ShadowContext) -> Result<(), Problem> {
        if self.server_side {
            return self.probe_server_side().await;
        }
        // redis-client moves shadow keys under the prefix itself; without one it refuses
        // shadow writes. Nothing to ask the server.
        if target.spec.shadow_prefix.is_none() {
            return Err(Problem::new(
                "has no shadow-prefix, so shadow writes would be refused",
            ));
        }
        Ok(())
    }

    async fn execute(&self, call: Call<'_>, s: &mut Scratch) -> Option<ErrorKind> {
        let Call { step, vars, .. } = call;
        let Action::Redis { words } = &step.action else {
            return Some(ErrorKind::Protocol);
        };
        let Some((name, args)) = words.split_first() else {
            return Some(ErrorKind::Protocol);
        };
        // The scenario makes the command name a plain word (no template).
        let name = name
            .as_static()
            .and_then(|n| std::str::from_utf8(n).ok())
            .unwrap_or("PING");
        let mut cmd = redis_client::cmd(name);
        for w in args {
            s.path.clear();
            w.render(vars, &mut s.path);
            cmd = cmd.arg(&s.path[..]);
        }
        use redis_client::Error as E;
        let sent = if self.server_side {
            // The connection's name is the tag; the keys stay as written.
            ShadowContext::scope(None, self.client.query_frame(cmd)).await
        } else {
            self.client.query_frame(cmd).await
        };
        match sent {
            Ok(frame) if !step.extract.is_empty() => {
                // A nil reply, or a value not in it, fails the step like a check (and the
                // iteration stops there).
                let Some(body) = reply_text(&frame) else {
                    return Some(ErrorKind::Check);
                };
                let no_headers = || std::iter::empty::<(&str, &[u8])>();
                for e in &step.extract {
                    match crate::scenario::extract(&e.how, no_headers, &body) {
                        Some(value) => s.extracted.push((e.var.clone(), value)),
                        None => return Some(ErrorKind::Check),
                    }
                }
                None
            }
            Ok(_) => None,
            Err(E::Server(_)) => Some(ErrorKind::Status),
            Err(E::Timeout(_)) => Some(ErrorKind::Timeout),
            Err(E::Connect { .. }) => Some(ErrorKind::Connect),
            Err(_) => Some(ErrorKind::Protocol),
        }
    }
}

impl Redis {
    /// A target whose connections carry the shadow name must be objstore's RESP port (a
    /// Redis server would take the name as a name and write live keys), and must serve them
    /// (its switch is not `off`).
    async fn probe_server_side(&self) -> Result<(), Problem> {
        let ask = |cmd| ShadowContext::scope(None, self.client.query_frame(cmd));
        let info = ask(redis_client::cmd("INFO").arg("server"))
            .await
            .map_err(|e| Problem::caused_by("did not answer INFO server", e))?;
        let objstore = reply_text(&info)
            .is_some_and(|t| String::from_utf8_lossy(&t).contains("objstore_version:"));
        if !objstore {
            return Err(Problem::new(
                "is not objstore's RESP port (INFO server has no objstore_version): only it                  keeps a named connection's keys apart; for Redis use shadow-prefix",
            ));
        }
        ask(redis_client::cmd("EXISTS").arg("loadtest-probe"))
            .await
            .map_err(|e| Problem::caused_by("refused a shadow read", e))?;
        Ok(())
    }
}

/// What `extract` reads of a reply: a string's bytes (as they are, not as UTF-8), and
/// anything else as JSON: a number's text, arrays and sets as arrays, maps as objects, so
/// `json = "$[0]"` picks from `LRANGE` and `json = "$.name"` from a RESP3 `HGETALL`.
/// `None`: nil, so the extraction fails; an error reply never gets here.
fn reply_text(frame: &redis_client::resp::Frame) -> Option<Vec<u8>> {
    use redis_client::resp::Frame as F;
    Some(match frame {
        F::Simple(b) | F::Bulk(b) | F::BigNumber(b) | F::Error(b) => b.to_vec(),
        F::Verbatim { data, .. } => data.to_vec(),
        F::Null => return None,
        other => json(other).to_string().into_bytes(),
    })
}

fn json(frame: &redis_client::resp::Frame) -> serde_json::Value {
    use redis_client::resp::Frame as F;
    use serde_json::Value as J;
    let text = |b: &[u8]| J::String(String::from_utf8_lossy(b).into_owned());
    match frame {
        F::Simple(b) | F::Bulk(b) | F::BigNumber(b) | F::Error(b) => text(b),
        F::Verbatim { data, .. } => text(data),
        F::Integer(i) => J::from(*i),
        F::Double(d) => J::from(*d),
        F::Boolean(b) => J::Bool(*b),
        F::Null => J::Null,
        F::Array(v) | F::Set(v) | F::Push(v) => J::Array(v.iter().map(json).collect()),
        F::Map(pairs) => J::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    let key = match json(k) {
                        J::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, json(v))
                })
                .collect(),
        ),
    }
}
