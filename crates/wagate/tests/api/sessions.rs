//! The sessions API: happy paths, the QR/pairing flows on the sandbox, validation.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Backend, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_readme_flow_create_qr_scan_me_logout_delete() {
    let app = spawn_app().await;
    assert!(app.key.starts_with("wag_"), "bootstrap key printed on first start");

    let s = app.create_session(json!({"name": "support-line", "engine": "sandbox"})).await;
    let id = s["id"].as_str().unwrap();
    assert!(id.starts_with("sess_"));
    assert_eq!(s["name"], "support-line");
    assert_eq!(s["engine"], "sandbox");
    assert_eq!(s["instanceId"].as_str().unwrap().len(), 12);
    assert_eq!(s["phoneNumber"], serde_json::Value::Null);
    assert!(s["createdAt"].as_str().unwrap().ends_with('Z'));

    let qr = app.get(&format!("/api/v1/sessions/{id}/qr")).await;
    assert_eq!(qr.status, StatusCode::OK);
    let qr = qr.json();
    let code = qr["qr"].as_str().unwrap();
    assert_eq!(code.split(',').count(), 4, "ref,noise,identity,adv: {code}");
    assert!(qr["expiresAt"].is_string());
    let s = app.get(&format!("/api/v1/sessions/{id}")).await.json();
    assert_eq!(s["status"], "awaiting_pairing");

    let me = app.get(&format!("/api/v1/sessions/{id}/me")).await;
    me.assert_error(404, "not_found");

    let s = app
        .post(&format!("/api/v1/sessions/{id}/sandbox:scanQr"), json!({"phoneNumber": "628123456789", "pushName": "Support"}))
        .await;
    assert_eq!(s.status, StatusCode::OK, "{}", String::from_utf8_lossy(&s.bytes));
    let s = s.json();
    assert_eq!(s["status"], "connected");
    assert_eq!(s["phoneNumber"], "628123456789");
    assert_eq!(s["waJid"], "628123456789@s.whatsapp.net");
    assert!(s["waLid"].as_str().unwrap().ends_with("@lid"));

    let me = app.get(&format!("/api/v1/sessions/{id}/me")).await.json();
    assert_eq!(me["connected"], true);
    assert_eq!(me["phoneNumber"], "628123456789");
    assert_eq!(me["sessionId"], id);
    assert_eq!(me["status"], "connected");
    assert_eq!(me["waJid"], "628123456789@s.whatsapp.net");
    assert_eq!(me["pushName"], "Support");
    assert!(me["waLid"].as_str().unwrap().ends_with("@lid"));

    // A paired session has no QR and takes no pairing code.
    app.get(&format!("/api/v1/sessions/{id}/qr")).await.assert_error(409, "conflict");
    app.post(&format!("/api/v1/sessions/{id}:requestPairingCode"), json!({"phone": "628123456789"}))
        .await
        .assert_error(400, "validation_error");

    let s = app.post(&format!("/api/v1/sessions/{id}:logout"), json!({})).await.json();
    assert_eq!(s["status"], "logged_out");
    assert_eq!(s["phoneNumber"], serde_json::Value::Null);
    app.get(&format!("/api/v1/sessions/{id}/me")).await.assert_error(404, "not_found");

    let del = app.call(Method::DELETE, &format!("/api/v1/sessions/{id}"), Some(&app.key), None).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    assert!(del.bytes.is_empty());
    app.get(&format!("/api/v1/sessions/{id}")).await.assert_error(404, "not_found");
    app.call(Method::DELETE, &format!("/api/v1/sessions/{id}"), Some(&app.key), None).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn qr_renders_as_png_and_svg() {
    let app = spawn_app().await;
    let id = app.sandbox_session().await;
    let png = app.get(&format!("/api/v1/sessions/{id}/qr?format=png")).await;
    assert_eq!(png.status, StatusCode::OK);
    assert_eq!(png.headers["content-type"], "image/png");
    assert_eq!(&png.bytes[..8], b"\x89PNG\r\n\x1a\n");
    let accept = app.client.get(app.url(&format!("/api/v1/sessions/{id}/qr"))).bearer_auth(&app.key).header("accept", "image/png").send().await.unwrap();
    assert_eq!(accept.headers()["content-type"], "image/png");
    let svg = app.get(&format!("/api/v1/sessions/{id}/qr?format=svg")).await;
    assert_eq!(svg.headers["content-type"], "image/svg+xml");
    assert!(String::from_utf8_lossy(&svg.bytes).contains("<svg"));
    app.get(&format!("/api/v1/sessions/{id}/qr?format=gif")).await.assert_validation("format");
}

#[tokio::test]
async fn pairing_code_flow() {
    let app = spawn_app().await;
    let id = app.sandbox_session().await;
    for bad in [json!({"phone": "+628123456789"}), json!({"phone": "1234567"}), json!({"phone": "6281234567890123"}), json!({"phone": 628123456789u64}), json!({})] {
        app.post(&format!("/api/v1/sessions/{id}:requestPairingCode"), bad).await.assert_validation("phone");
    }
    let code = app.post(&format!("/api/v1/sessions/{id}:requestPairingCode"), json!({"phone": "628123456789"})).await;
    assert_eq!(code.status, StatusCode::OK);
    let code = code.json();
    let c = code["code"].as_str().unwrap();
    assert!(c.len() == 9 && c.as_bytes()[4] == b'-', "ABCD-1234 form: {c}");
    assert!(code["expiresAt"].is_string());

    app.post(&format!("/api/v1/sessions/{id}/sandbox:enterPairingCode"), json!({"code": "ZZZZ-ZZZZ"}))
        .await
        .assert_validation("code");
    let s = app.post(&format!("/api/v1/sessions/{id}/sandbox:enterPairingCode"), json!({"code": c})).await;
    assert_eq!(s.status, StatusCode::OK, "{}", String::from_utf8_lossy(&s.bytes));
    let s = s.json();
    assert_eq!(s["status"], "connected");
    assert_eq!(s["phoneNumber"], "628123456789");
}

#[tokio::test]
async fn lifecycle_stop_start_restart_disconnect_unlink() {
    let app = spawn_app().await;
    let id = app.sandbox_session().await;
    app.post(&format!("/api/v1/sessions/{id}/sandbox:scanQr"), json!({"phoneNumber": "4915112345678"})).await;

    let s = app.post(&format!("/api/v1/sessions/{id}:stop"), json!({})).await.json();
    assert_eq!(s["status"], "stopped");
    assert_eq!(app.post(&format!("/api/v1/sessions/{id}:stop"), json!({})).await.json()["status"], "stopped", "stop is idempotent");
    app.get(&format!("/api/v1/sessions/{id}/qr")).await.assert_error(409, "conflict");
    // The identity is kept while stopped; start resumes without pairing.
    assert_eq!(app.get(&format!("/api/v1/sessions/{id}/me")).await.json()["connected"], false);
    app.post(&format!("/api/v1/sessions/{id}:start"), json!({})).await;
    let s = app.wait_for(&id, 10, |s| s["status"] == "connected").await;
    assert_eq!(s["phoneNumber"], "4915112345678");
    let again = app.post(&format!("/api/v1/sessions/{id}:start"), json!({})).await.json();
    assert_eq!(again["status"], "connected", "start is idempotent");

    app.post(&format!("/api/v1/sessions/{id}:restart"), json!({})).await;
    app.wait_for(&id, 10, |s| s["status"] == "connected").await;

    let s = app.post(&format!("/api/v1/sessions/{id}/sandbox:disconnect"), json!({})).await.json();
    assert_eq!(s["status"], "reconnecting");
    app.wait_for(&id, 15, |s| s["status"] == "connected").await;

    let s = app.post(&format!("/api/v1/sessions/{id}/sandbox:unlink"), json!({})).await.json();
    assert_eq!(s["status"], "logged_out");
    assert_eq!(s["statusReason"], "device_removed");
    assert_eq!(s["waJid"], serde_json::Value::Null);
}

#[tokio::test]
async fn connected_sessions_come_back_after_a_gateway_restart() {
    let app = spawn_app().await;
    let paired = app.sandbox_session().await;
    app.post(&format!("/api/v1/sessions/{paired}/sandbox:scanQr"), json!({"phoneNumber": "628111111111"})).await;
    let stopped = app.sandbox_session().await;
    app.post(&format!("/api/v1/sessions/{stopped}:stop"), json!({})).await;

    let app = app.restart().await;
    let s = app.wait_for(&paired, 15, |s| s["status"] == "connected").await;
    assert_eq!(s["phoneNumber"], "628111111111");
    let s = app.get(&format!("/api/v1/sessions/{stopped}")).await.json();
    assert_eq!(s["status"], "stopped", "a stopped session stays stopped");
}

#[tokio::test]
async fn list_is_paginated_newest_first() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.create_session(json!({"engine": "sandbox", "start": false, "name": format!("s{i}")})).await["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let first = app.get("/api/v1/sessions?pageSize=2").await.json();
    let page: Vec<_> = first["sessions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(page, ids[..2]);
    let token = first["nextPageToken"].as_str().unwrap();
    let second = app.get(&format!("/api/v1/sessions?pageSize=2&pageToken={token}")).await.json();
    assert_eq!(second["sessions"][0]["id"], ids[2].as_str());
    let third = app.get(&format!("/api/v1/sessions?pageSize=2&pageToken={}", second["nextPageToken"].as_str().unwrap())).await.json();
    assert_eq!(third["sessions"].as_array().unwrap().len(), 1);
    assert!(third.get("nextPageToken").is_none_or(|t| t.is_null() || t == ""));
    let all = app.get("/api/v1/sessions").await.json();
    assert_eq!(all["sessions"].as_array().unwrap().len(), 5);
    assert_eq!(app.get("/api/v1/sessions?pageSize=500").await.json()["sessions"].as_array().unwrap().len(), 5);
    // Over the documented maximum is refused, as the OpenAPI document says (not silently capped).
    app.get("/api/v1/sessions?pageSize=501").await.assert_validation("pageSize");
    app.get("/api/v1/sessions?pageSize=0").await.assert_validation("pageSize");
    app.get("/api/v1/sessions?pageSize=abc").await.assert_validation("pageSize");
    app.get("/api/v1/sessions?pageToken=garbage").await.assert_validation("pageToken");
}

#[tokio::test]
async fn create_and_patch_validate_their_input() {
    let app = spawn_app().await;
    app.post("/api/v1/sessions", json!({"engine": "telegram"})).await.assert_validation("engine");
    app.post("/api/v1/sessions", json!({"name": "x", "colour": "red"})).await.assert_validation("colour");
    app.post("/api/v1/sessions", json!({"name": ""})).await.assert_validation("name");
    app.post("/api/v1/sessions", json!({"start": "yes"})).await.assert_validation("start");
    let malformed = app
        .client
        .post(app.url("/api/v1/sessions"))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let body: serde_json::Value = malformed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "validation_error");
    assert_eq!(body["error"]["details"]["field"], "body");

    let a = app.create_session(json!({"name": "dup", "engine": "sandbox", "start": false})).await;
    app.post("/api/v1/sessions", json!({"name": "dup", "engine": "sandbox"})).await.assert_error(409, "conflict");
    let id = a["id"].as_str().unwrap();
    let patched = app.call(Method::PATCH, &format!("/api/v1/sessions/{id}"), Some(&app.key), Some(json!({"name": "renamed"}))).await;
    assert_eq!(patched.json()["name"], "renamed");
    let cleared = app.call(Method::PATCH, &format!("/api/v1/sessions/{id}"), Some(&app.key), Some(json!({"name": null}))).await;
    assert_eq!(cleared.json()["name"], serde_json::Value::Null);
    app.call(Method::PATCH, &format!("/api/v1/sessions/{id}"), Some(&app.key), Some(json!({"status": "connected"})))
        .await
        .assert_validation("status");

    let big = "x".repeat(70 * 1024);
    let too_large = app.post("/api/v1/sessions", json!({"name": big})).await;
    too_large.assert_error(413, "payload_too_large");
}

#[tokio::test]
async fn unknown_routes_and_methods_use_the_envelope() {
    let app = spawn_app().await;
    app.get("/api/v1/nope").await.assert_error(404, "not_found");
    let a = app.call(Method::PUT, "/api/v1/sessions", Some(&app.key), None).await;
    a.assert_error(405, "method_not_allowed");
    assert!(a.headers.contains_key("allow"));
    let id = app.sandbox_session().await;
    app.call(Method::GET, &format!("/api/v1/sessions/{id}:start"), Some(&app.key), None).await.assert_error(405, "method_not_allowed");
    app.post(&format!("/api/v1/sessions/{id}:explode"), json!({})).await.assert_error(404, "not_found");
    app.post(&format!("/api/v1/sessions/{id}"), json!({})).await.assert_error(405, "method_not_allowed");
    app.post(&format!("/api/v1/sessions/{id}/sandbox:explode"), json!({})).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn sandbox_routes_are_404_for_whatsapp_sessions() {
    let app = spawn_app().await;
    let s = app.create_session(json!({"engine": "whatsapp", "start": false})).await;
    let id = s["id"].as_str().unwrap();
    app.post(&format!("/api/v1/sessions/{id}/sandbox:scanQr"), json!({"phoneNumber": "628123456789"}))
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn operations_endpoints_need_no_credential() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"] {
        let a = app.call(Method::GET, path, None, None).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert!(a.headers.contains_key("x-request-id"), "{path} carries a request id");
    }
    app.get("/api/v1/sessions").await;
    let metrics = String::from_utf8(app.call(Method::GET, "/metrics", None, None).await.bytes).unwrap();
    assert!(metrics.contains("wagate_http_requests_total{method=\"GET\",route=\"/api/v1/sessions\",status=\"200\"}"), "{metrics}");
    assert!(metrics.contains("wagate_sessions{status=\"connected\"}"), "{metrics}");
    assert!(metrics.contains("wagate_webhook_deliveries"), "{metrics}");

    let doc = app.call(Method::GET, "/openapi.json", None, None).await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/v1/sessions", "/api/v1/sessions/{session}", "/api/v1/sessions/{session}:start", "/api/v1/sessions/{session}:stop",
        "/api/v1/sessions/{session}:restart", "/api/v1/sessions/{session}:logout", "/api/v1/sessions/{session}/qr",
        "/api/v1/sessions/{session}:requestPairingCode", "/api/v1/sessions/{session}/me",
        "/api/v1/sessions/{session}/sandbox:scanQr", "/api/v1/sessions/{session}/sandbox:enterPairingCode",
        "/api/v1/sessions/{session}/sandbox:disconnect", "/api/v1/sessions/{session}/sandbox:unlink", "/v2/session/me",
        "/healthz", "/readyz", "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "OpenAPI documents {path}");
    }
    let echoed = app.client.get(app.url("/healthz")).header("x-request-id", "my-id-1").send().await.unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "my-id-1");
}

#[tokio::test]
async fn the_same_flow_on_postgresql() {
    let Some(app) = spawn_app_with(Backend::Postgres, Default::default()).await else { return };
    let id = app.sandbox_session().await;
    app.post(&format!("/api/v1/sessions/{id}/sandbox:scanQr"), json!({"phoneNumber": "628123456789"})).await;
    let me = app.get(&format!("/api/v1/sessions/{id}/me")).await.json();
    assert_eq!(me["waJid"], "628123456789@s.whatsapp.net");
    let app = app.restart().await;
    app.wait_for(&id, 15, |s| s["status"] == "connected").await;
    let del = app.call(Method::DELETE, &format!("/api/v1/sessions/{id}"), Some(&app.key), None).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
}

/// Create with a device name, read it back everywhere, change and clear it with PATCH.
async fn device_name_round_trip(app: &crate::helpers::TestApp) {
    let s = app.create_session(json!({"engine": "sandbox", "start": false, "deviceName": "  Front desk  "})).await;
    assert_eq!(s["deviceName"], "Front desk", "trimmed");
    let id = s["id"].as_str().unwrap().to_owned();
    let plain = app.create_session(json!({"engine": "sandbox", "start": false})).await;
    assert_eq!(plain["deviceName"], serde_json::Value::Null, "null means the gateway default");
    let explicit_null = app.create_session(json!({"engine": "sandbox", "start": false, "deviceName": null})).await;
    assert_eq!(explicit_null["deviceName"], serde_json::Value::Null);

    let path = format!("/api/v1/sessions/{id}");
    assert_eq!(app.get(&path).await.json()["deviceName"], "Front desk");
    let listed = app.get("/api/v1/sessions").await.json();
    let mine = listed["sessions"].as_array().unwrap().iter().find(|s| s["id"] == id.as_str()).unwrap().clone();
    assert_eq!(mine["deviceName"], "Front desk");

    let patch = |body: serde_json::Value| app.call(Method::PATCH, &path, Some(&app.key), Some(body));
    let changed = patch(json!({"deviceName": "Reception 🛎"})).await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(changed.json()["deviceName"], "Reception 🛎");
    // Absent leaves it; both fields at once.
    let renamed = patch(json!({"name": "front"})).await.json();
    assert_eq!((renamed["name"].as_str(), renamed["deviceName"].as_str()), (Some("front"), Some("Reception 🛎")));
    let both = patch(json!({"name": "desk", "deviceName": "Desk"})).await.json();
    assert_eq!((both["name"].as_str(), both["deviceName"].as_str()), (Some("desk"), Some("Desk")));
    assert_eq!(patch(json!({})).await.json()["deviceName"], "Desk");
    // null clears it, back to the gateway default.
    let cleared = patch(json!({"deviceName": null})).await.json();
    assert_eq!(cleared["deviceName"], serde_json::Value::Null);
    assert_eq!(cleared["name"], "desk");
    assert_eq!(app.get(&path).await.json()["deviceName"], serde_json::Value::Null);

    // It survives the session being started (the engine gets it at start).
    patch(json!({"deviceName": "Desk"})).await;
    let started = app.post(&format!("/api/v1/sessions/{id}:start"), json!({})).await.json();
    assert_eq!(started["deviceName"], "Desk");
}

#[tokio::test]
async fn device_name_is_set_at_creation_and_patched() {
    let app = spawn_app().await;
    device_name_round_trip(&app).await;

    let doc = app.call(Method::GET, "/openapi.json", None, None).await.json();
    let schemas = &doc["components"]["schemas"];
    for schema in ["SessionView", "CreateSessionRequest", "PatchSessionRequest"] {
        assert!(schemas[schema]["properties"].get("deviceName").is_some(), "{schema} documents deviceName: {}", schemas[schema]);
    }
}

#[tokio::test]
async fn device_name_round_trips_on_postgresql() {
    let Some(app) = spawn_app_with(Backend::Postgres, Default::default()).await else { return };
    device_name_round_trip(&app).await;
}

#[tokio::test]
async fn invalid_device_names_are_validation_errors() {
    let app = spawn_app().await;
    let too_long = "x".repeat(51);
    for bad in [json!(""), json!("   "), json!(too_long), json!("a\nb"), json!("tab\there"), json!("nul\u{0}"), json!(42)] {
        app.post("/api/v1/sessions", json!({"engine": "sandbox", "deviceName": bad}))
            .await
            .assert_validation("deviceName");
    }
    // 50 characters (not bytes) is the limit.
    let fifty = "é".repeat(50);
    let s = app.create_session(json!({"engine": "sandbox", "start": false, "deviceName": fifty})).await;
    assert_eq!(s["deviceName"], fifty.as_str());

    let path = format!("/api/v1/sessions/{}", s["id"].as_str().unwrap());
    for bad in [json!(""), json!(too_long), json!("a\rb"), json!(["x"])] {
        app.call(Method::PATCH, &path, Some(&app.key), Some(json!({"name": "kept?", "deviceName": bad})))
            .await
            .assert_validation("deviceName");
    }
    // A rejected PATCH writes nothing, not even its valid name.
    let unchanged = app.get(&path).await.json();
    assert_eq!((unchanged["name"].clone(), unchanged["deviceName"].clone()), (serde_json::Value::Null, json!(fifty)));
}
