//! `loadtest init URL`: a commented starter scenario for one HTTP endpoint, valid as written
//! (the tests run it), to be edited rather than written from the README.

use std::fmt::Write as _;

/// The starter scenario for `url` (`http://host:port/path?query`).
///
/// # Errors
///
/// `url` is not an absolute `http://` or `https://` URL (with a host).
pub fn starter(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| {
        format!("{url:?} is not a URL ({e}); write e.g. http://127.0.0.1:8080/health")
    })?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        _ => {
            return Err(format!(
                "{url:?}: write an absolute http:// or https:// URL, e.g. http://127.0.0.1:8080/health"
            ));
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} has no host"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    if path.contains("{{") {
        return Err(format!(
            "{url:?}: a path with `{{{{` would be read as a template"
        ));
    }
    let server = format!("{scheme}://{authority}");
    // JSON string syntax is TOML's basic-string syntax for what a URI can hold.
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut out = String::new();
    let _ = write!(
        out,
        r#"# A starter scenario for {url}, written by `loadtest init`.
#   loadtest validate FILE    check it without sending anything
#   loadtest run FILE         run it (exit code 0 passed, 1 thresholds failed)
# Every key and its default: loadtest/README.md.

# Over every request of the run; a failed threshold makes the exit code 1.
thresholds = ["p99 < 500ms", "error-rate < 1%", "checks > 99%"]

[run]
name = "starter"
# Every request is tagged as shadow traffic (x-jupiter-shadow: 1 and W3C baggage), so the
# service can keep its writes apart from live data; see "live" below.
shadow = true
timeout = "5s"                # per request
graceful-stop = "5s"          # in-flight requests may finish this long after the end

[output]
json = "report.json"
html = "report.html"          # one file with plots, no external resources

[targets.api]
kind = "http"
url = {server}
# A live target must answer the shadow probe (a request to `probe` carrying the tag) with
# x-jupiter-shadow-ack: 1 before any load is sent. A copy holding no live data (staging):
# live = false.
live = true
probe = {path}
# http2 = true                # HTTP/2 (prior knowledge; over https, ALPN h2) instead of HTTP/1.1
# tls = {{ ca-file = "ca.pem" }} # https: trust this CA instead of the public roots; or
# tls = {{ insecure = true }}    # https: take any certificate (a staging server's own)

# Open model: requests arrive at the rate below whatever the server does, and latency counts
# from each request's intended send time (a stalled server shows, no coordinated omission).
[[scenarios]]
name = "get"
executor = "constant-arrival-rate"
rate = 10                     # per second: raise it once this passes
duration = "30s"
max-in-flight = 100           # workers; arrivals beyond them are dropped and counted
# Or a ramp: executor = "ramping-arrival-rate", start-rate = 0,
#   stages = [{{ duration = "1m", target = 200 }}, {{ duration = "5m", target = 200 }}]
# Or a closed model: executor = "constant-vus", vus = 10, duration = "30s"

[[scenarios.steps]]
name = "get"
# Templates: {{{{seq}}}} iteration number, {{{{vu}}}} worker, {{{{uuid}}}}, {{{{random 1 100}}}} …
http = {{ method = "GET", path = {path} }}
checks = {{ status = [200] }}  # body-contains = "…", headers = {{ … }}
"#,
        server = q(&server),
        path = q(path),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::starter;

    #[test]
    fn only_absolute_http_urls_make_a_starter() {
        let s = starter("http://127.0.0.1:8080/api/items?limit=10").unwrap();
        assert!(s.contains("url = \"http://127.0.0.1:8080\""), "{s}");
        assert!(s.contains("path = \"/api/items?limit=10\""), "{s}");
        assert!(
            starter("http://localhost")
                .unwrap()
                .contains("probe = \"/\"")
        );
        let s = starter("https://shop.test/health").unwrap();
        assert!(s.contains("url = \"https://shop.test\""), "{s}");
        assert!(s.contains("# tls = { ca-file"), "{s}");
        for (bad, want) in [
            ("/just/a/path", "write an absolute http:// or https:// URL"),
            ("ftp://x/", "write an absolute http:// or https:// URL"),
            ("http://x/{{seq}}", "would be read as a template"),
            ("http://exa mple", "is not a URL"),
        ] {
            let e = starter(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
