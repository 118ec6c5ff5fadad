use std::net::IpAddr;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;

use super::*;

fn class(ip: &str) -> AddressClass {
    AddressClass::of(ip.parse::<IpAddr>().unwrap())
}

#[test]
fn addresses_are_classified() {
    use AddressClass::*;
    let cases = [
        ("8.8.8.8", Public),
        ("93.184.216.34", Public),
        ("127.0.0.1", Loopback),
        ("127.255.0.9", Loopback),
        ("10.1.2.3", Private),
        ("172.16.0.1", Private),
        ("172.31.255.255", Private),
        ("172.32.0.1", Public),
        ("192.168.1.1", Private),
        ("100.64.0.1", Private),
        ("169.254.169.254", LinkLocal),
        ("224.0.0.1", Multicast),
        ("0.0.0.0", Unspecified),
        ("255.255.255.255", Reserved),
        ("2606:4700::1111", Public),
        ("::1", Loopback),
        ("::", Unspecified),
        ("fc00::1", Private),
        ("fd12:3456::1", Private),
        ("fe80::1", LinkLocal),
        ("ff02::1", Multicast),
        ("::ffff:127.0.0.1", Loopback),
        ("::ffff:169.254.169.254", LinkLocal),
        ("::ffff:8.8.8.8", Public),
        ("64:ff9b::a9fe:a9fe", LinkLocal),
        ("2002:7f00:1::", Loopback),
        ("::127.0.0.1", Loopback),
        ("2001:db8::1", Reserved),
    ];
    for (ip, expected) in cases {
        assert_eq!(class(ip), expected, "{ip}");
    }
}

#[test]
fn private_networks_are_allowed_only_when_asked() {
    let strict = AddressGuard::new(false);
    let lenient = AddressGuard::new(true);
    for ip in ["127.0.0.1", "10.0.0.1", "::1", "fd00::1", "::ffff:192.168.0.1"] {
        let ip: IpAddr = ip.parse().unwrap();
        assert!(strict.check_ip(ip).is_err(), "{ip}");
        assert!(lenient.check_ip(ip).is_ok(), "{ip}");
    }
    for ip in ["169.254.169.254", "fe80::1", "224.0.0.1", "0.0.0.0", "::", "ff02::1"] {
        let ip: IpAddr = ip.parse().unwrap();
        assert!(lenient.check_ip(ip).is_err(), "{ip} is never allowed");
    }
}

#[test]
fn urls_are_checked_without_the_network() {
    let guard = AddressGuard::new(false);
    assert!(guard.check_url("https://hooks.example.com/x?y=1").is_ok());
    assert!(guard.check_url("http://93.184.216.34:8080/").is_ok());
    assert_eq!(guard.check_url("ftp://example.com/"), Err(UrlError::Scheme));
    assert_eq!(guard.check_url("file:///etc/passwd"), Err(UrlError::Scheme));
    assert_eq!(guard.check_url("example.com/hook"), Err(UrlError::Malformed));
    assert_eq!(guard.check_url("not a url"), Err(UrlError::Malformed));
    for (url, class) in [
        ("http://127.0.0.1:9/", AddressClass::Loopback),
        ("http://[::1]/", AddressClass::Loopback),
        ("http://10.0.0.5/", AddressClass::Private),
        ("http://169.254.169.254/latest/meta-data/", AddressClass::LinkLocal),
        ("http://[fe80::1]/", AddressClass::LinkLocal),
        ("http://[::ffff:127.0.0.1]/", AddressClass::Loopback),
        ("http://0.0.0.0/", AddressClass::Unspecified),
        ("http://2130706433/", AddressClass::Loopback),
        ("http://0x7f.1/", AddressClass::Loopback),
        ("http://localhost:8080/", AddressClass::Loopback),
        ("http://LocalHost./", AddressClass::Loopback),
        ("http://api.localhost/", AddressClass::Loopback),
        ("http://[ff02::1]/", AddressClass::Multicast),
    ] {
        match guard.check_url(url) {
            Err(UrlError::Refused { class: got, .. }) => assert_eq!(got, class, "{url}"),
            other => panic!("{url}: {other:?}"),
        }
    }
    let lenient = AddressGuard::new(true);
    assert!(lenient.check_url("http://127.0.0.1:9/").is_ok());
    assert!(lenient.check_url("http://localhost:9/").is_ok());
    assert!(lenient.check_url("http://169.254.169.254/").is_err());
}

#[tokio::test]
async fn names_are_checked_against_what_they_resolve_to() {
    let guard = AddressGuard::new(false);
    // `localhost` is refused by name already; a name in /etc/hosts for 127.0.0.1 would be too.
    assert!(guard.check_url_resolving("http://localhost/", Duration::from_secs(2)).await.is_err());
    // A name that does not resolve (no network in CI) is accepted: every request checks again.
    assert!(guard.check_url_resolving("https://unresolvable.invalid/", Duration::from_secs(2)).await.is_ok());
}

/// A local server: `/ok` answers 200, `/redirect` 302 to `/ok`.
async fn server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/redirect", get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/ok")]) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }))
}

#[tokio::test]
async fn the_client_refuses_what_the_guard_refuses_at_connection_time() {
    let (addr, _server) = server().await;
    let strict = EgressClient::new(AddressGuard::new(false), Duration::from_secs(5), "wagate-test");
    let url = |host: &str, path: &str| Url::parse(&format!("http://{host}:{}{path}", addr.port())).unwrap();

    // An IP literal is refused before anything is sent.
    let refused = strict.request(reqwest::Method::GET, &url("127.0.0.1", "/ok"));
    assert!(matches!(refused, Err(UrlError::Refused { class: AddressClass::Loopback, .. })));
    assert!(strict.request(reqwest::Method::GET, &url("[::1]", "/ok")).is_err());

    // A name is resolved by the guarded resolver, which drops loopback addresses. (The URL
    // check refuses `localhost` by name; skip it, as a DNS name that rebinds to 127.0.0.1 would.)
    let rebinding = strict.client.get(url("localhost", "/ok")).send().await.unwrap_err();
    assert!(is_refused(&rebinding), "{rebinding:?}");
    assert!(describe(&rebinding).contains("loopback"), "{}", describe(&rebinding));

    // With private networks allowed it connects; redirects come back as they are.
    let lenient = EgressClient::new(AddressGuard::new(true), Duration::from_secs(5), "wagate-test");
    let ok = lenient.request(reqwest::Method::GET, &url("localhost", "/ok")).unwrap().send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let redirect = lenient.request(reqwest::Method::GET, &url("127.0.0.1", "/redirect")).unwrap().send().await.unwrap();
    assert_eq!(redirect.status(), StatusCode::FOUND, "not followed");
}
