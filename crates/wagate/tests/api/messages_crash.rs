//! `kill -9` of a real gateway process with messages accepted but not sent: after a restart,
//! every accepted message arrives exactly once, in order (sandbox to sandbox, and on the real
//! `whatsapp` engine to an emulated phone).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::crash::serve_with;

async fn call(client: &reqwest::Client, base: &str, key: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client.request(method, format!("{base}{path}")).bearer_auth(key).timeout(Duration::from_secs(20));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("the gateway answers");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Polls `GET path` until `pred` holds.
async fn poll(client: &reqwest::Client, base: &str, key: &str, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = call(client, base, key, Method::GET, path, None).await;
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out polling {path}; last: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A sandbox session, paired with `phone` and connected.
pub(crate) async fn paired(client: &reqwest::Client, base: &str, key: &str, phone: &str) -> String {
    let (_, s) = call(client, base, key, Method::POST, "/api/v1/sessions", Some(json!({"engine": "sandbox"}))).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, a) = call(client, base, key, Method::POST, &format!("/api/v1/sessions/{id}/sandbox:scanQr"), Some(json!({"phoneNumber": phone}))).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "could not pair {id}: {a}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    poll(client, base, key, &format!("/api/v1/sessions/{id}"), |s| s["status"] == "connected").await;
    id
}

#[tokio::test]
async fn messages_accepted_before_a_kill_9_arrive_once_in_order_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("WAGATE_SEND_PER_MINUTE", "600")];
    let gw = serve_with(dir.path(), true, &env);
    let key = gw.key.clone().expect("bootstrap key on the first start");
    let client = reqwest::Client::new();
    let a = paired(&client, &gw.base, &key, "628111111111").await;
    let b = paired(&client, &gw.base, &key, "628222222222").await;

    let (status, _) = call(&client, &gw.base, &key, Method::POST, &format!("/api/v1/sessions/{a}:stop"), Some(json!({}))).await;
    assert_eq!(status, 200);
    let mut accepted = Vec::new();
    for i in 0..3 {
        let body = json!({"to": "628222222222", "text": format!("durable {i}")});
        let (status, m) = call(&client, &gw.base, &key, Method::POST, &format!("/api/v1/sessions/{a}/messages"), Some(body)).await;
        assert_eq!(status, 202, "{m}");
        accepted.push(m["waMessageId"].as_str().unwrap().to_owned());
    }
    let mut gw = gw;
    gw.child.kill().unwrap(); // SIGKILL
    gw.child.wait().unwrap();
    drop(gw);

    let gw = serve_with(dir.path(), false, &env);
    // B resumes by itself (it was running); A was stopped, so it waits for its start.
    poll(&client, &gw.base, &key, &format!("/api/v1/sessions/{b}"), |s| s["status"] == "connected").await;
    let (status, _) = call(&client, &gw.base, &key, Method::POST, &format!("/api/v1/sessions/{a}:start"), Some(json!({}))).await;
    assert_eq!(status, 200);
    let inbound = format!("/api/v1/sessions/{b}/messages?direction=inbound");
    let got = poll(&client, &gw.base, &key, &inbound, |v| v["messages"].as_array().is_some_and(|m| m.len() >= 3)).await;
    let outbound = format!("/api/v1/sessions/{a}/messages?direction=outbound");
    poll(&client, &gw.base, &key, &outbound, |v| v["messages"].as_array().is_some_and(|m| m.iter().all(|m| m["status"] == "delivered"))).await;
    // Once more, after everything was delivered: still exactly three.
    let (_, again) = call(&client, &gw.base, &key, Method::GET, &inbound, None).await;
    assert_eq!(again["messages"], got["messages"]);
    let mut got: Vec<Value> = got["messages"].as_array().unwrap().clone();
    got.reverse();
    let texts: Vec<&str> = got.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["durable 0", "durable 1", "durable 2"]);
    let ids: Vec<&str> = got.iter().map(|m| m["waMessageId"].as_str().unwrap()).collect();
    assert_eq!(ids, accepted.iter().map(String::as_str).collect::<Vec<_>>(), "the ids fixed at acceptance");
}

/// The same on the real `whatsapp` engine through the emulator: a stopped session, three
/// messages accepted (one under an `Idempotency-Key`, repeated), `kill -9`, a restart and a
/// start: the phone decrypts each exactly once, in order, under the ids fixed at acceptance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_messages_accepted_before_a_kill_9_reach_the_phone_once_in_order() {
    use wa_emulator::{AccountSpec, Emulator, EmulatorConfig};
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let (mine, bob) = ("15550300101", "15550300102");
    emulator.create_account(AccountSpec { phone: Some(bob.into()), ..AccountSpec::default() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ws_url = emulator.ws_url();
    let env = [
        ("WAGATE_SEND_PER_MINUTE", "600"),
        ("WAGATE_WA_URL", ws_url.as_str()),
        ("WAGATE_WA_VERSION", "2.3000.1027934701"),
        ("WAGATE_WA_CONNECT_TIMEOUT", "5"),
    ];
    let gw = serve_with(dir.path(), true, &env);
    let key = gw.key.clone().expect("bootstrap key on the first start");
    let client = reqwest::Client::new();
    let (_, s) = call(&client, &gw.base, &key, Method::POST, "/api/v1/sessions", Some(json!({"name": "durable"}))).await;
    let a = s["id"].as_str().unwrap().to_owned();
    let qr = poll(&client, &gw.base, &key, &format!("/api/v1/sessions/{a}/qr"), |v| v["qr"].is_string()).await;
    let spec = AccountSpec { phone: Some(mine.into()), ..AccountSpec::default() };
    emulator.scan_qr(qr["qr"].as_str().unwrap(), spec).await.expect("the phone scans the QR");
    poll(&client, &gw.base, &key, &format!("/api/v1/sessions/{a}"), |s| s["status"] == "connected").await;

    let (status, _) = call(&client, &gw.base, &key, Method::POST, &format!("/api/v1/sessions/{a}:stop"), Some(json!({}))).await;
    assert_eq!(status, 200);
    let send = |base: &str, text: String, idempotency: Option<&'static str>| {
        let mut req = client.post(format!("{base}/api/v1/sessions/{a}/messages")).bearer_auth(&key).json(&json!({"to": bob, "text": text}));
        if let Some(k) = idempotency {
            req = req.header("Idempotency-Key", k);
        }
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status().as_u16(), 202);
            res.json::<Value>().await.unwrap()["waMessageId"].as_str().unwrap().to_owned()
        }
    };
    let mut accepted = Vec::new();
    for i in 0..3 {
        accepted.push(send(&gw.base, format!("durable {i}"), (i == 2).then_some("order-7")).await);
    }
    assert_eq!(send(&gw.base, "durable 2".into(), Some("order-7")).await, accepted[2], "the repeat answers the first");
    let mut gw = gw;
    gw.child.kill().unwrap(); // SIGKILL
    gw.child.wait().unwrap();
    drop(gw);

    let gw = serve_with(dir.path(), false, &env);
    let (status, _) = call(&client, &gw.base, &key, Method::POST, &format!("/api/v1/sessions/{a}:start"), Some(json!({}))).await;
    assert_eq!(status, 200);
    let outbound = format!("/api/v1/sessions/{a}/messages?direction=outbound");
    poll(&client, &gw.base, &key, &outbound, |v| {
        v["messages"].as_array().is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["status"] == "delivered"))
    })
    .await;
    let texts = || -> Vec<(String, String)> {
        let inbox = emulator.phone_messages(bob);
        inbox.into_iter().filter(|m| !m.from_me).filter_map(|m| Some((m.id, m.text?))).collect()
    };
    let expected: Vec<(String, String)> = accepted.iter().enumerate().map(|(i, id)| (id.clone(), format!("durable {i}"))).collect();
    assert_eq!(texts(), expected, "each once, in order, under the ids fixed at acceptance");
    // The repeat after the restart still sends nothing.
    assert_eq!(send(&gw.base, "durable 2".into(), Some("order-7")).await, accepted[2]);
    let (_, list) = call(&client, &gw.base, &key, Method::GET, &outbound, None).await;
    assert_eq!(list["messages"].as_array().map(Vec::len), Some(3));
    assert_eq!(texts(), expected);
}
