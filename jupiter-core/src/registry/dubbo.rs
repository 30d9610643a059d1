//! Dubbo interface-level registration: the provider keys Apache Dubbo's etcd3 registry writes,
//! so Java (and dubbo-go) consumers find a Rust gRPC service.
//!
//! A provider is one key under the process's lease:
//!
//! ```text
//! /{group, default dubbo}/{URL-encoded interface}/providers/{URL-encoded provider URL}
//! ```
//!
//! whose value is the lease id in decimal, as Dubbo's Java registry writes it. The provider
//! URL:
//!
//! ```text
//! grpc://{ip}:{port}/{interface}?anyhost=false&application={app}&dubbo=2.0.2&dynamic=true
//!     &interface={interface}&methods={m1,m2,…}&release={version}&side=provider
//!     &timestamp={ms}[&group=…][&version=…][&weight=…]
//! ```
//!
//! Encoding follows Java's `URLEncoder` (what Dubbo's `URL.encode` calls): letters, digits and
//! `.-*_` stay, a space is `+`, every other byte is `%XX`. dubbo-go reads these keys with Go's
//! `url.QueryUnescape`, which decodes them to the same text.
//!
//! The interface name of a gRPC service is its proto's full service name by default
//! ([`DubboNaming::Proto`], what Dubbo 3's Triple protocol and dubbo-go use); Dubbo 2.7's gRPC
//! code generator registers `{package}.Dubbo{Service}Grpc$I{Service}` instead
//! ([`DubboNaming::Dubbo27Grpc`]).

use std::fmt::Write as _;

use prost::Message as _;

use crate::Error;
use crate::config::{ConfigError, ErrorKind};

/// How a proto service's Dubbo interface is named. Deserializes from `"proto"` or
/// `"dubbo27-grpc"`, for a service's own configuration section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DubboNaming {
    /// The proto's full service name, `pkg.Greeter` (Dubbo 3 Triple, dubbo-go). The default.
    #[default]
    Proto,
    /// Dubbo 2.7's gRPC generator: `pkg.DubboGreeterGrpc$IGreeter`.
    #[serde(rename = "dubbo27-grpc")]
    Dubbo27Grpc,
}

/// The optional `group` and `version` a provider and a target both take, with their docs.
macro_rules! group_and_version {
    ($group_doc:literal, $version_doc:literal) => {
        #[doc = $group_doc]
        #[must_use]
        pub fn group(mut self, group: impl Into<String>) -> Self {
            self.group = Some(group.into());
            self
        }

        #[doc = $version_doc]
        #[must_use]
        pub fn version(mut self, version: impl Into<String>) -> Self {
            self.version = Some(version.into());
            self
        }
    };
}

/// A gRPC service as Dubbo consumers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DubboService {
    /// The interface name (see [`DubboNaming`]).
    pub interface: String,
    /// The method names, in the descriptor's order.
    pub methods: Vec<String>,
    /// Dubbo group; `None` is Dubbo's default group, `dubbo`.
    pub group: Option<String>,
    /// Dubbo service version.
    pub version: Option<String>,
    /// Load-balancing weight.
    pub weight: Option<u32>,
}

impl DubboService {
    /// The service `full_name` (`pkg.Greeter`) of an encoded `FileDescriptorSet` (what
    /// `tonic_prost_build`/`protox` write, and tonic-reflection serves).
    ///
    /// # Errors
    ///
    /// The bytes are not a descriptor set, or it has no such service, or the service has no
    /// methods (a Dubbo provider URL lists at least one).
    pub fn from_descriptor(
        descriptor_set: &[u8],
        full_name: &str,
        naming: DubboNaming,
    ) -> Result<DubboService, Error> {
        let invalid = |why: String| {
            Error::Config(ConfigError::new(
                None,
                full_name.to_owned(),
                ErrorKind::Validation(format!("Dubbo service: {why}")),
            ))
        };
        let set = prost_types::FileDescriptorSet::decode(descriptor_set)
            .map_err(|e| invalid(format!("not a FileDescriptorSet ({e})")))?;
        let (package, service) = match full_name.rsplit_once('.') {
            Some((p, s)) => (p, s),
            None => ("", full_name),
        };
        let found = set
            .file
            .iter()
            .filter(|f| f.package() == package)
            .flat_map(|f| &f.service)
            .find(|s| s.name() == service)
            .ok_or_else(|| invalid("not in the descriptor set".into()))?;
        let methods: Vec<String> = found.method.iter().map(|m| m.name().to_owned()).collect();
        if methods.is_empty() {
            return Err(invalid("has no methods".into()));
        }
        let interface = match naming {
            DubboNaming::Proto => full_name.to_owned(),
            DubboNaming::Dubbo27Grpc if package.is_empty() => {
                format!("Dubbo{service}Grpc$I{service}")
            }
            DubboNaming::Dubbo27Grpc => format!("{package}.Dubbo{service}Grpc$I{service}"),
        };
        Ok(DubboService {
            interface,
            methods,
            group: None,
            version: None,
            weight: None,
        })
    }

    group_and_version!("With a Dubbo group.", "With a Dubbo service version.");

    /// With a weight.
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }

    /// The provider URL of this service at `address` (`ip:port`) in application `app`,
    /// registered at `timestamp_ms`.
    pub fn provider_url(&self, app: &str, address: &str, timestamp_ms: u128) -> String {
        let mut params: Vec<(&str, String)> = vec![
            ("anyhost", "false".into()),
            ("application", app.into()),
            ("dubbo", "2.0.2".into()),
            ("dynamic", "true".into()),
            ("interface", self.interface.clone()),
            ("methods", self.methods.join(",")),
            ("release", env!("CARGO_PKG_VERSION").into()),
            ("side", "provider".into()),
            ("timestamp", timestamp_ms.to_string()),
        ];
        if let Some(g) = &self.group {
            params.push(("group", g.clone()));
        }
        if let Some(v) = &self.version {
            params.push(("version", v.clone()));
        }
        if let Some(w) = self.weight {
            params.push(("weight", w.to_string()));
        }
        // Dubbo sorts parameters by name in its URL strings.
        params.sort_by(|a, b| a.0.cmp(b.0));
        let mut url = format!("grpc://{address}/{}?", self.interface);
        for (i, (k, v)) in params.iter().enumerate() {
            if i > 0 {
                url.push('&');
            }
            let _ = write!(url, "{k}={v}");
        }
        url
    }

    /// The etcd key of `provider_url` for this service.
    pub fn provider_key(&self, provider_url: &str) -> String {
        format!(
            "/{}/{}/providers/{}",
            self.group.as_deref().unwrap_or("dubbo"),
            encode(&self.interface),
            encode(provider_url)
        )
    }
}

/// The providers of a Dubbo interface to discover (see [`Target::dubbo`](super::Target::dubbo)).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DubboTarget {
    /// The interface name.
    pub interface: String,
    /// The group; `None` is Dubbo's default group, `dubbo`.
    pub group: Option<String>,
    /// The service version providers must have; `None` takes any.
    pub version: Option<String>,
}

impl DubboTarget {
    /// The providers of `interface` in the default group, any version.
    pub fn new(interface: impl Into<String>) -> Self {
        DubboTarget {
            interface: interface.into(),
            group: None,
            version: None,
        }
    }

    group_and_version!("In `group`.", "Of service version `version` only.");

    /// `/{group}/{interface}/providers/`.
    pub fn prefix(&self) -> String {
        format!(
            "/{}/{}/providers/",
            self.group.as_deref().unwrap_or("dubbo"),
            encode(&self.interface)
        )
    }

    /// The provider a child key (what follows [`prefix`](Self::prefix)) describes, if it is
    /// one this target takes: a `grpc` or `tri` URL of this interface, group and version, not
    /// `enabled=false`.
    pub fn provider(&self, child: &str) -> Option<super::ServiceInfo> {
        let url = decode(child)?;
        let (scheme, rest) = url.split_once("://")?;
        if scheme != "grpc" && scheme != "tri" {
            return None;
        }
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let address = location.split('/').next()?;
        let (host, port) = address.rsplit_once(':')?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return None;
        }
        let params: std::collections::BTreeMap<&str, &str> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let group = params.get("group").copied().filter(|g| !g.is_empty());
        let wanted_group = self.group.as_deref().filter(|g| *g != "dubbo");
        if group.filter(|g| *g != "dubbo") != wanted_group {
            return None;
        }
        if let Some(v) = &self.version
            && params.get("version").copied() != Some(v.as_str())
        {
            return None;
        }
        if params.get("enabled").copied() == Some("false")
            || params
                .get("interface")
                .is_some_and(|i| *i != self.interface)
        {
            return None;
        }
        let mut info = super::ServiceInfo::new(self.interface.clone(), scheme, address);
        if let Some(w) = params.get("weight").and_then(|w| w.parse::<f64>().ok()) {
            info = info.weight(w);
        }
        for key in ["application", "group", "version", "side", "release"] {
            if let Some(v) = params.get(key) {
                info = info.meta(key, *v);
            }
        }
        Some(info)
    }
}

/// Java `URLEncoder.encode(s, "UTF-8")`: what Dubbo's `URL.encode` produces.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for &b in s.as_bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// The inverse of [`encode`] (and of Go's `url.QueryEscape`); `None` for a malformed `%`
/// escape or bytes that are not UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_javas_url_encoder() {
        assert_eq!(encode("a.b-c*d_e"), "a.b-c*d_e");
        assert_eq!(
            encode("grpc://1.2.3.4:50051/x?a=b&c=d,e"),
            "grpc%3A%2F%2F1.2.3.4%3A50051%2Fx%3Fa%3Db%26c%3Dd%2Ce"
        );
        assert_eq!(encode("a b~$é"), "a+b%7E%24%C3%A9");
        for s in ["", "x", "a b~$é", "grpc://h:1/p?q=1&r=a,b", "%+"] {
            assert_eq!(decode(&encode(s)).as_deref(), Some(s));
        }
        assert_eq!(decode("%4"), None);
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%FF"), None, "not UTF-8");
    }

    #[test]
    fn the_naming_reads_from_configuration() {
        #[derive(serde::Deserialize)]
        struct Section {
            naming: DubboNaming,
        }
        let read = |text: &str| toml::from_str::<Section>(text).map(|s| s.naming);
        assert_eq!(read("naming = \"proto\"").unwrap(), DubboNaming::Proto);
        assert_eq!(
            read("naming = \"dubbo27-grpc\"").unwrap(),
            DubboNaming::Dubbo27Grpc
        );
        assert!(read("naming = \"java\"").is_err());
    }

    fn service() -> DubboService {
        DubboService {
            interface: "shop.Orders".into(),
            methods: vec!["Get".into(), "Put".into()],
            group: None,
            version: None,
            weight: None,
        }
    }

    #[test]
    fn provider_urls_carry_dubbos_parameters_sorted() {
        let url = service().version("1.0").weight(50).provider_url(
            "orders",
            "10.0.0.1:50051",
            1_700_000_000_000,
        );
        let release = env!("CARGO_PKG_VERSION");
        assert_eq!(
            url,
            format!(
                "grpc://10.0.0.1:50051/shop.Orders?anyhost=false&application=orders&dubbo=2.0.2&dynamic=true&interface=shop.Orders&methods=Get,Put&release={release}&side=provider&timestamp=1700000000000&version=1.0&weight=50"
            )
        );
        let key = service().provider_key(&url);
        assert!(
            key.starts_with("/dubbo/shop.Orders/providers/grpc%3A%2F%2F10.0.0.1"),
            "{key}"
        );
        let grouped = service().group("blue");
        assert!(
            grouped
                .provider_key("u")
                .starts_with("/blue/shop.Orders/providers/")
        );
    }
}
