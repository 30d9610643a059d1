use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn extracts_marker_and_baggage() {
    assert!(ShadowContext::from_headers(&headers(&[])).is_none());
    assert!(ShadowContext::from_headers(&headers(&[(HEADER, "0")])).is_none());
    let c = ShadowContext::from_headers(&headers(&[(HEADER, "1"), (RUN_HEADER, "run-7")])).unwrap();
    assert_eq!(c.run_id(), Some("run-7"));
    let c = ShadowContext::from_headers(&headers(&[(
        "baggage",
        "a=b, jupiter.shadow=1;p=q, jupiter.shadow.run=r9",
    )]))
    .unwrap();
    assert_eq!(c.run_id(), Some("r9"));
    // Oversized or non-printable run ids are dropped, the tag stays.
    let long = "x".repeat(MAX_RUN_ID + 1);
    assert_eq!(
        ShadowContext::from_headers(&headers(&[(HEADER, "1"), (RUN_HEADER, &long)]))
            .unwrap()
            .run_id(),
        None
    );
}

#[test]
fn inject_round_trips_and_keeps_other_baggage() {
    let mut h = headers(&[("baggage", "tenant=42")]);
    ShadowContext::new().with_run_id("r1").inject(&mut h);
    assert_eq!(
        h.get("baggage").unwrap(),
        "tenant=42,jupiter.shadow=1,jupiter.shadow.run=r1"
    );
    let back = ShadowContext::from_headers(&h).unwrap();
    assert_eq!(back.run_id(), Some("r1"));
}

#[test]
fn policy_decisions() {
    let p = ShadowPolicy::key_prefix("s", "shadow:");
    let with = |mode, f: &dyn Fn()| {
        ShadowContext::sync_scope(Some(ShadowContext { run_id: None, mode }), f);
    };
    with(ShadowMode::On, &|| {
        assert_eq!(p.route(Access::Read), Ok(Route::Shadow))
    });
    with(ShadowMode::Watch, &|| {
        assert_eq!(p.route(Access::Read), Ok(Route::Live));
        assert!(p.route(Access::Write).is_err());
    });
    with(ShadowMode::Off, &|| assert!(p.route(Access::Read).is_err()));
    let none = ShadowPolicy::none("redis.main");
    with(ShadowMode::On, &|| {
        let e = none.route(Access::Write).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shadow write refused by redis.main: no shadow target configured; shadow traffic must never touch live data"
        );
        assert!(none.route(Access::Read).is_err());
    });
    // Live inside a shadow scope when explicitly scoped as live.
    with(ShadowMode::On, &|| {
        ShadowContext::sync_scope(None, || {
            assert_eq!(none.route(Access::Write), Ok(Route::Live))
        })
    });
}
