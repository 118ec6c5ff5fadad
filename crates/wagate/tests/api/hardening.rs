//! Issue 8, the API's share: prompt upstream errors, one Authorization header, exact 405/404
//! for custom methods, safe request ids, error messages in the client's terms, and an OpenAPI
//! document that matches what the server does.

use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wagate::config::Layer;

use crate::helpers::{Answer, Backend, TestApp, spawn_app, spawn_app_with};

// ---- 3. slow upstream answers ----

/// A gateway whose WhatsApp endpoint refuses every connection.
async fn app_without_whatsapp() -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws/chat", listener.local_addr().unwrap());
    drop(listener);
    let env = Layer {
        wa_url: Some(url),
        wa_version: Some("2.3000.1027934701".into()),
        wa_connect_timeout: Some(2),
        ..Layer::default()
    };
    spawn_app_with(Backend::Sqlite, env).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_whatsapp_answers_upstream_unavailable_at_once() {
    let app = app_without_whatsapp().await;
    let id = app.create_session(json!({})).await["id"].as_str().unwrap().to_owned();
    app.wait_for(&id, 30, |s| s["status"] == "reconnecting").await;

    let started = Instant::now();
    let details = app.get(&format!("/api/v1/sessions/{id}/qr")).await.assert_error(502, "upstream_unavailable");
    assert!(details.is_object());
    let qr_took = started.elapsed();

    let started = Instant::now();
    app.post(&format!("/api/v1/sessions/{id}:requestPairingCode"), json!({"phone": "628123456789"}))
        .await
        .assert_error(502, "upstream_unavailable");
    let code_took = started.elapsed();
    // Before: 10 s for the QR, 30 s (then 503 `internal`) for the pairing code.
    assert!(qr_took < Duration::from_secs(2), "QR took {qr_took:?}");
    assert!(code_took < Duration::from_secs(2), "pairing code took {code_took:?}");
    // The session keeps retrying and the gateway keeps serving.
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    app.post(&format!("/api/v1/sessions/{id}:stop"), json!({})).await;
}

// ---- 4. duplicated Authorization ----

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let app = spawn_app().await;
    let good = HeaderValue::from_str(&format!("Bearer {}", app.key)).unwrap();
    for second in [good.clone(), HeaderValue::from_static("Bearer wag_not_a_key")] {
        let res = app
            .client
            .get(app.url("/api/v1/sessions"))
            .header(AUTHORIZATION, good.clone())
            .header(AUTHORIZATION, second)
            .send()
            .await
            .unwrap();
        let a = Answer { status: res.status(), headers: res.headers().clone(), bytes: res.bytes().await.unwrap().to_vec() };
        a.assert_error(401, "unauthorized");
    }
    // One header still works.
    assert_eq!(app.get("/api/v1/sessions").await.status, StatusCode::OK);
}

// ---- 5. 405 with an exact Allow, 404 for unknown paths ----

#[track_caller]
fn assert_405(a: &Answer, allow: &str) {
    let details = a.assert_error(405, "method_not_allowed");
    let header = a.headers.get("allow").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header.as_deref(), Some(allow), "Allow header; details {details}");
}

/// A raw request line, for paths a URL library would normalise (`/..`).
async fn raw_status(app: &TestApp, method: &str, path: &str) -> (u16, Value) {
    let addr = app.base.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n", app.key);
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    sock.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    // Chunked or not, the JSON object is the part between the outer braces.
    let json = &body[body.find('{').unwrap_or(0)..=body.rfind('}').unwrap_or(0)];
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

#[tokio::test]
async fn custom_methods_answer_exact_405s_and_unknown_paths_404() {
    let app = spawn_app().await;
    let id = app.sandbox_session().await;
    let key = Some(app.key.as_str());
    let call = |m: Method, p: String| {
        let app = &app;
        async move { app.call(m, &p, key, None).await }
    };

    assert_405(&call(Method::GET, format!("/api/v1/sessions/{id}:start")).await, "POST");
    assert_405(&call(Method::PUT, format!("/api/v1/sessions/{id}:start")).await, "POST");
    assert_405(&call(Method::DELETE, format!("/api/v1/sessions/{id}:requestPairingCode")).await, "POST");
    assert_405(&call(Method::PUT, format!("/api/v1/sessions/{id}")).await, "GET, PATCH, DELETE");
    assert_405(&call(Method::POST, format!("/api/v1/sessions/{id}")).await, "GET, PATCH, DELETE");
    assert_405(&call(Method::GET, format!("/api/v1/sessions/{id}/sandbox:scanQr")).await, "POST");
    // Routes of axum's own method routers carry Allow too.
    let a = call(Method::PUT, "/api/v1/sessions".into()).await;
    a.assert_error(405, "method_not_allowed");
    let allow = a.headers.get("allow").expect("Allow header").to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST") && !allow.contains("PUT"), "{allow}");
    let a = call(Method::POST, format!("/api/v1/sessions/{id}/qr")).await;
    a.assert_error(405, "method_not_allowed");
    assert!(a.headers.get("allow").unwrap().to_str().unwrap().contains("GET"));
    // A 405 needs no credential (routing comes first), like axum's own.
    assert_405(&app.call(Method::GET, &format!("/api/v1/sessions/{id}:stop"), None, None).await, "POST");

    for path in [
        format!("/api/v1/sessions/{id}/anything"),
        format!("/api/v1/sessions/{id}/sandbox"),
        format!("/api/v1/sessions/{id}/sandbox:nope"),
        format!("/api/v1/sessions/{id}/other:scanQr"),
        format!("/api/v1/sessions/{id}:nope"),
        format!("/api/v1/sessions/{id}/a/b"),
    ] {
        for m in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
            call(m.clone(), path.clone()).await.assert_error(404, "not_found");
        }
    }
    for m in ["GET", "POST", "PUT"] {
        let (status, body) = raw_status(&app, m, &format!("/api/v1/sessions/{id}/..")).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{m} /..: {body}");
    }
}

#[tokio::test]
async fn the_events_collection_routes_its_custom_methods_through_the_same_table() {
    let app = spawn_app().await;
    let key = Some(app.key.as_str());
    for m in [Method::POST, Method::PUT, Method::DELETE] {
        assert_405(&app.call(m, "/api/v1/events:stream", key, None).await, "GET");
    }
    // Routing comes first, as for every custom method.
    assert_405(&app.call(Method::POST, "/api/v1/events:stream", None, None).await, "GET");
    for path in ["/api/v1/events:nope", "/api/v1/events:", "/api/v1/sessions:stream", "/api/v1/nothing", "/api/v1/nothing:stream"] {
        for m in [Method::GET, Method::POST] {
            app.call(m, path, key, None).await.assert_error(404, "not_found");
        }
    }
}

// ---- 7. the OpenAPI document matches behaviour ----

#[tokio::test]
async fn scanning_the_qr_of_a_paired_sandbox_session_is_a_conflict() {
    let app = spawn_app().await;
    let id = app.sandbox_session().await;
    let scan = format!("/api/v1/sessions/{id}/sandbox:scanQr");
    assert_eq!(app.post(&scan, json!({"phoneNumber": "628123456789"})).await.status, StatusCode::OK);
    app.post(&scan, json!({"phoneNumber": "628123456789"})).await.assert_error(409, "conflict");
}

#[tokio::test]
async fn an_empty_create_body_means_all_defaults() {
    let app = spawn_app().await;
    for content_type in [None, Some("application/json")] {
        let mut req = app.client.post(app.url("/api/v1/sessions")).bearer_auth(&app.key);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let s: Value = res.json().await.unwrap();
        assert_eq!((s["engine"].as_str(), s["name"].as_str()), (Some("whatsapp"), None), "{s}");
        assert_ne!(s["status"], "stopped", "started by default: {s}");
        app.post(&format!("/api/v1/sessions/{}:stop", s["id"].as_str().unwrap()), json!({})).await;
    }
}

#[tokio::test]
async fn the_openapi_document_states_what_the_server_does() {
    let app = spawn_app().await;
    let doc = app.call(Method::GET, "/openapi.json", None, None).await.json();
    let mut authenticated = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op.get("security").is_none() {
                continue;
            }
            authenticated += 1;
            for status in ["401", "403"] {
                assert!(op["responses"].get(status).is_some(), "{method} {path} lacks {status}");
            }
        }
    }
    assert!(authenticated >= 15, "{authenticated}");

    let qr = &doc["paths"]["/api/v1/sessions/{session}/qr"]["get"]["responses"]["200"]["content"];
    for media in ["application/json", "image/png", "image/svg+xml"] {
        assert!(qr.get(media).is_some(), "/qr 200 lacks {media}: {qr}");
    }
    let page_size = doc["paths"]["/api/v1/sessions"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "pageSize")
        .unwrap()
        .clone();
    assert_eq!((page_size["schema"]["minimum"].as_u64(), page_size["schema"]["maximum"].as_u64()), (Some(1), Some(500)), "{page_size}");

    let schemas = &doc["components"]["schemas"];
    let create = &schemas["CreateSessionRequest"]["properties"];
    assert_eq!(create["name"]["maxLength"], 100, "{create}");
    assert_eq!(create["name"]["minLength"], 1, "{create}");
    assert_eq!(create["deviceName"]["maxLength"], 50, "{create}");
    let phone = &schemas["PairingCodeRequest"]["properties"]["phone"];
    assert!(phone["pattern"].is_string(), "{phone}");
    let create_op = &doc["paths"]["/api/v1/sessions"]["post"];
    assert_eq!(create_op["requestBody"]["required"], false, "{create_op}");
    let start_op = &doc["paths"]["/api/v1/sessions/{session}:start"]["post"];
    assert!(start_op["requestBody"].is_null() || start_op["requestBody"]["required"] == false, "{start_op}");
    let scan_op = &doc["paths"]["/api/v1/sessions/{session}/sandbox:scanQr"]["post"]["responses"]["409"];
    assert!(scan_op.is_object());
    let codes: Vec<&str> = schemas["ErrorCode"]["enum"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(codes.contains(&"timeout"), "{codes:?}");
    let description = doc["info"]["description"].as_str().unwrap();
    assert!(description.contains("| `timeout` | 504"), "the codes table: {description}");
}

// ---- 8. request ids ----

async fn request_id_echo(app: &TestApp, sent: &[u8]) -> String {
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", HeaderValue::from_bytes(sent).unwrap())
        .send()
        .await
        .unwrap();
    res.headers().get("x-request-id").expect("x-request-id answered").to_str().unwrap().to_owned()
}

#[tokio::test]
async fn only_short_safe_request_ids_are_echoed() {
    let app = spawn_app().await;
    assert_eq!(request_id_echo(&app, b"req-42_a.B").await, "req-42_a.B");
    let longest = "a".repeat(64);
    assert_eq!(request_id_echo(&app, longest.as_bytes()).await, longest);
    let is_ulid = |s: &str| s.len() == 26 && s.chars().all(|c| c.is_ascii_alphanumeric());
    for bad in ["a".repeat(65), "x".repeat(10_000), "a b".into(), "id\" level=error msg=\"forged".into(), "a/b".into()] {
        let answered = request_id_echo(&app, bad.as_bytes()).await;
        assert!(is_ulid(&answered) && answered != bad, "{bad:.40} came back as {answered}");
    }
    // Without one, a new one.
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(is_ulid(res.headers()["x-request-id"].to_str().unwrap()));
}

// ---- 9. error messages in the client's terms ----

#[tokio::test]
async fn body_errors_say_what_was_wrong_without_rust_types() {
    let app = spawn_app().await;
    let cases: [(Value, &str, &str); 6] = [
        (json!([]), "body", "the request body must be a JSON object"),
        (json!("x"), "body", "the request body must be a JSON object"),
        (json!({"name": 1}), "name", "`name` must be a string"),
        (json!({"start": "yes"}), "start", "`start` must be a boolean"),
        (json!({"foo": 1}), "foo", "unknown field `foo`"),
        (json!({"engine": "x"}), "engine", "`engine` must be `whatsapp` or `sandbox`"),
    ];
    for (body, field, message) in cases {
        let a = app.post("/api/v1/sessions", body.clone()).await;
        a.assert_validation(field);
        assert_eq!(a.json()["error"]["message"], message, "for {body}");
    }
    let id = app.sandbox_session().await;
    let a = app.post(&format!("/api/v1/sessions/{id}:requestPairingCode"), json!({})).await;
    a.assert_validation("phone");
    assert_eq!(a.json()["error"]["message"], "`phone` is required");
    let a = app.call(Method::PATCH, &format!("/api/v1/sessions/{id}"), Some(&app.key), Some(json!({"name": ["x"]}))).await;
    a.assert_validation("name");
    assert_eq!(a.json()["error"]["message"], "`name` must be a string");
    let raw = app
        .client
        .post(app.url("/api/v1/sessions"))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let a = Answer { status: raw.status(), headers: raw.headers().clone(), bytes: raw.bytes().await.unwrap().to_vec() };
    a.assert_validation("body");
    let message = a.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.starts_with("the request body is not valid JSON"), "{message}");
}
