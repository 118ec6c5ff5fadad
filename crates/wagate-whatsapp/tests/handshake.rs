//! The first bytes the real client sends through `WhatsappEngine` are what WhatsApp expects:
//! the `WA\x06\x03` connection header, then a frame with a 3-byte big-endian length whose
//! payload is `HandshakeMessage{client_hello{ephemeral: 32 bytes}}`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use wagate_engine::{Engine, SessionOutput};
use wagate_whatsapp::WhatsappEngine;
use whatsapp_rust::waproto::buffa::Message;
use whatsapp_rust::waproto::whatsapp::HandshakeMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_frame_is_the_header_and_a_client_hello() {
    let server = Server::start(Behaviour::StallAfterUpgrade).await;
    let dir = tempfile::tempdir().unwrap();
    let engine = WhatsappEngine::new(config(dir.path(), server.addr));
    let sink = Arc::new(RecordingSink::default());
    let session = engine.start(spec(), SessionOutput::new(sink.clone())).await.unwrap();

    // Collect the bytes of the first connection until header + one whole frame are in.
    let deadline = Instant::now() + PATIENCE;
    let bytes = loop {
        let got: Vec<u8> = server.first_messages.lock().unwrap().concat();
        if got.len() >= 7 && got.len() >= 7 + u24(&got[4..7]) {
            break got;
        }
        assert!(Instant::now() < deadline, "no complete first frame; got {got:02x?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    session.stop().await;

    assert_eq!(&bytes[..4], b"WA\x06\x03", "connection header");
    let len = u24(&bytes[4..7]);
    let payload = &bytes[7..7 + len];
    let hello = HandshakeMessage::decode_from_slice(payload).expect("a HandshakeMessage");
    let client_hello = hello.client_hello.as_option().expect("client_hello set");
    assert_eq!(client_hello.ephemeral.as_ref().map(Vec::len), Some(32), "32-byte ephemeral key");
    assert!(hello.server_hello.is_unset() && hello.client_finish.is_unset());
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}
