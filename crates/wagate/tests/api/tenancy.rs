//! Tenant isolation: another organization's session is `not_found`, byte for byte the same
//! answer as an unknown id, on every session route.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

fn session_routes(id: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, format!("/api/v1/sessions/{id}"), None),
        (Method::PATCH, format!("/api/v1/sessions/{id}"), Some(json!({"name": "mine"}))),
        (Method::DELETE, format!("/api/v1/sessions/{id}"), None),
        (Method::POST, format!("/api/v1/sessions/{id}:start"), Some(json!({}))),
        (Method::POST, format!("/api/v1/sessions/{id}:stop"), Some(json!({}))),
        (Method::POST, format!("/api/v1/sessions/{id}:restart"), Some(json!({}))),
        (Method::POST, format!("/api/v1/sessions/{id}:logout"), Some(json!({}))),
        (Method::POST, format!("/api/v1/sessions/{id}:requestPairingCode"), Some(json!({"phone": "628123456789"}))),
        (Method::GET, format!("/api/v1/sessions/{id}/qr"), None),
        (Method::GET, format!("/api/v1/sessions/{id}/me"), None),
        (Method::POST, format!("/api/v1/sessions/{id}/sandbox:scanQr"), Some(json!({"phoneNumber": "628123456789"}))),
        (Method::POST, format!("/api/v1/sessions/{id}/sandbox:enterPairingCode"), Some(json!({"code": "ABCD-1234"}))),
        (Method::POST, format!("/api/v1/sessions/{id}/sandbox:disconnect"), Some(json!({}))),
        (Method::POST, format!("/api/v1/sessions/{id}/sandbox:unlink"), Some(json!({}))),
    ]
}

#[tokio::test]
async fn another_organizations_session_is_indistinguishable_from_an_unknown_one() {
    let app = spawn_app().await;
    // Organization `default` (the bootstrap key) owns a paired sandbox session.
    let theirs = app.sandbox_session().await;
    app.post(&format!("/api/v1/sessions/{theirs}/sandbox:scanQr"), json!({"phoneNumber": "628123456789"})).await;
    let (intruder, _) = app.key_for("intruder-corp", "manage,send,read").await;
    let unknown = wagate_core::SessionId::generate().to_string();

    for ((method, path, body), (_, unknown_path, _)) in session_routes(&theirs).into_iter().zip(session_routes(&unknown)) {
        let a = app.call(method.clone(), &path, Some(&intruder), body.clone()).await;
        let b = app.call(method.clone(), &unknown_path, Some(&intruder), body).await;
        assert_eq!(a.status, 404, "{method} {path}: {}", String::from_utf8_lossy(&a.bytes));
        assert_eq!(a.bytes, b.bytes, "{method} {path}: identical body to an unknown id");
        a.assert_error(404, "not_found");
    }
    // A malformed id answers the same too.
    let c = app.call(Method::GET, "/api/v1/sessions/sess_garbage", Some(&intruder), None).await;
    let d = app.call(Method::GET, &format!("/api/v1/sessions/{unknown}"), Some(&intruder), None).await;
    assert_eq!(c.bytes, d.bytes);

    // The intruder's list does not show it, and nothing of the victim changed.
    let list = app.call(Method::GET, "/api/v1/sessions", Some(&intruder), None).await.json();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 0);
    let s = app.get(&format!("/api/v1/sessions/{theirs}")).await.json();
    assert_eq!(s["status"], "connected");
    assert_eq!(s["name"], Value::Null);
}

#[tokio::test]
async fn wawp_session_me() {
    let app = spawn_app().await;
    let s = app.create_session(json!({"engine": "sandbox"})).await;
    let (id, instance) = (s["id"].as_str().unwrap(), s["instanceId"].as_str().unwrap().to_owned());
    let url = |q: &str| format!("/v2/session/me?{q}");

    // Not paired yet.
    app.call(Method::GET, &url(&format!("instance_id={instance}&access_token={}", app.key)), None, None).await.assert_error(404, "not_found");

    app.post(&format!("/api/v1/sessions/{id}/sandbox:scanQr"), json!({"phoneNumber": "201012345678", "pushName": "John Doe", "platform": "android"})).await;
    let ok = app.call(Method::GET, &url(&format!("instance_id={instance}&access_token={}", app.key)), None, None).await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.json(),
        json!({"id": "201012345678@c.us", "pushName": "John Doe", "platform": "android", "me": {"id": "201012345678@c.us", "name": "John Doe"}})
    );
    // The token may come in a header.
    let header = app.client.get(app.url(&url(&format!("instance_id={instance}")))).header("access-token", &app.key).send().await.unwrap();
    assert_eq!(header.status(), 200);

    app.call(Method::GET, &url(&format!("access_token={}", app.key)), None, None).await.assert_validation("instance_id");
    app.call(Method::GET, &url(&format!("instance_id=abc&access_token={}", app.key)), None, None).await.assert_validation("instance_id");
    app.call(Method::GET, &url(&format!("instance_id={instance}")), None, None).await.assert_error(401, "unauthorized");
    app.call(Method::GET, &url(&format!("instance_id={instance}&access_token=wag_nope")), None, None).await.assert_error(401, "unauthorized");
    let (reader, _) = app.key_for("default", "read").await;
    app.call(Method::GET, &url(&format!("instance_id={instance}&access_token={reader}")), None, None).await.assert_error(401, "unauthorized");
    app.call(Method::GET, &url(&format!("instance_id=ZZZZZZZZZZZZ&access_token={}", app.key)), None, None).await.assert_error(404, "not_found");
    let (other, _) = app.key_for("other-org", "manage").await;
    let foreign = app.call(Method::GET, &url(&format!("instance_id={instance}&access_token={other}")), None, None).await;
    let unknown = app.call(Method::GET, &url(&format!("instance_id=ZZZZZZZZZZZZ&access_token={other}")), None, None).await;
    assert_eq!(foreign.status, 404);
    assert_eq!(foreign.bytes, unknown.bytes, "another organization's instance answers like an unknown one");
}
