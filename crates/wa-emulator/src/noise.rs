//! The server side of the WhatsApp Noise handshake (XX, IK and XXfallback) and the
//! encrypted transport that follows it.
//!
//! The client's initiator lives in `wacore-noise`; this is its mirror image, built on the
//! same public primitives (`NoiseHandshake`, `NoiseCipher`, the frame codec).

use anyhow::{Context, anyhow, bail};
use whatsapp_rust::buffa::{Message as _, MessageField};
use whatsapp_rust::wacore::libsignal::protocol::{KeyPair, PrivateKey};
use whatsapp_rust::wacore::noise::{NoiseCipher, NoiseHandshake};
use whatsapp_rust::wacore_binary::consts::{
    NOISE_PATTERN_IK, NOISE_PATTERN_XX, NOISE_PATTERN_XXFALLBACK, WA_CONN_HEADER,
};
use whatsapp_rust::waproto::whatsapp::{self as wa, cert_chain::noise_certificate, handshake_message};

/// The server's long-lived Noise identity and the certificate chain that vouches for it.
///
/// The chain has the shape the client checks (intermediate issued by serial 0, leaf issued by
/// the intermediate, leaf key = server static), signed by the emulator's own root. The
/// client's pinned root is WhatsApp's, so a client that verifies signatures refuses this
/// chain: only a build with `danger-skip-cert-chain-verify` (tests) talks to the emulator.
pub struct ServerIdentity {
    pub static_key: KeyPair,
    pub cert_chain: Vec<u8>,
}

impl ServerIdentity {
    /// `static_private` is the persisted key, if any; `now` (unix seconds) dates the chain.
    pub fn new(static_private: Option<&[u8]>, now: u64) -> anyhow::Result<Self> {
        let static_key = match static_private {
            Some(bytes) => {
                let private = PrivateKey::deserialize(bytes).map_err(|e| anyhow!("stored server key: {e}"))?;
                let public = private.public_key().map_err(|e| anyhow!("stored server key: {e}"))?;
                KeyPair::new(public, private)
            }
            None => KeyPair::generate(&mut rand::rng()),
        };
        let cert_chain = build_cert_chain(&static_key, now)?;
        Ok(Self { static_key, cert_chain })
    }

    pub fn private_bytes(&self) -> Vec<u8> {
        self.static_key.private_key.serialize().to_vec()
    }

    fn public(&self) -> &[u8] {
        self.static_key.public_key.public_key_bytes()
    }
}

/// Valid from a day ago for a year: long enough that returning clients use IK.
fn build_cert_chain(server: &KeyPair, now: u64) -> anyhow::Result<Vec<u8>> {
    let mut rng = rand::rng();
    let root = KeyPair::generate(&mut rng);
    let intermediate = KeyPair::generate(&mut rng);
    let (not_before, not_after) = (now.saturating_sub(86_400), now + 365 * 86_400);
    let intermediate_details = noise_certificate::Details {
        serial: Some(1),
        issuer_serial: Some(0),
        key: Some(intermediate.public_key.public_key_bytes().to_vec()),
        not_before: Some(not_before),
        not_after: Some(not_after),
    }
    .encode_to_vec();
    let leaf_details = noise_certificate::Details {
        serial: Some(2),
        issuer_serial: Some(1),
        key: Some(server.public_key.public_key_bytes().to_vec()),
        not_before: Some(not_before),
        not_after: Some(not_after),
    }
    .encode_to_vec();
    let sign = |key: &KeyPair, details: &[u8]| -> anyhow::Result<Vec<u8>> {
        Ok(key.private_key.calculate_signature(details, &mut rand::rng()).map_err(|e| anyhow!("{e}"))?.to_vec())
    };
    let chain = wa::CertChain {
        intermediate: MessageField::some(wa::cert_chain::NoiseCertificate {
            signature: Some(sign(&root, &intermediate_details)?),
            details: Some(intermediate_details),
        }),
        leaf: MessageField::some(wa::cert_chain::NoiseCertificate {
            signature: Some(sign(&intermediate, &leaf_details)?),
            details: Some(leaf_details),
        }),
    };
    Ok(chain.encode_to_vec())
}

/// Which pattern the client used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    Xx,
    Ik,
    /// The client tried IK with a server key we do not hold (e.g. the emulator restarted
    /// without a data directory) and we answered with XXfallback.
    XxFallback,
}

/// A finished handshake: the transport ciphers, the client's static key and its payload.
pub struct Established {
    pub transport: Transport,
    pub client_static: [u8; 32],
    pub payload: wa::ClientPayload,
    pub pattern: Pattern,
}

/// The responder. Feed it the client's handshake messages (frame payloads, header removed).
pub enum Responder<'a> {
    /// Waiting for ClientHello.
    Start(&'a ServerIdentity),
    /// ServerHello sent (XX or XXfallback); waiting for ClientFinish.
    AwaitFinish(Box<AwaitFinish>),
}

/// The responder's state between its ServerHello and the client's ClientFinish.
pub struct AwaitFinish {
    noise: NoiseHandshake,
    ephemeral: KeyPair,
    pattern: Pattern,
}

/// What to do after feeding a message.
pub enum Step<'a> {
    /// Send this ServerHello and feed the next message.
    Reply(Vec<u8>, Responder<'a>),
    /// Send this ServerHello (IK); the handshake is complete.
    ReplyAndDone(Vec<u8>, Box<Established>),
    /// The handshake is complete.
    Done(Box<Established>),
}

impl<'a> Responder<'a> {
    pub fn new(identity: &'a ServerIdentity) -> Self {
        Self::Start(identity)
    }

    pub fn feed(self, message: &[u8]) -> anyhow::Result<Step<'a>> {
        let message = wa::HandshakeMessage::decode_from_slice(message).context("decoding a handshake message")?;
        match self {
            Self::Start(identity) => {
                let hello = message.client_hello.into_option().context("expected ClientHello")?;
                let client_eph: [u8; 32] = hello
                    .ephemeral
                    .as_deref()
                    .context("ClientHello without ephemeral")?
                    .try_into()
                    .map_err(|_| anyhow!("client ephemeral is not 32 bytes"))?;
                match (hello.r#static.as_deref(), hello.payload.as_deref()) {
                    (Some(enc_static), Some(enc_payload)) => {
                        match ik(identity, &client_eph, enc_static, enc_payload)? {
                            Some((reply, established)) => Ok(Step::ReplyAndDone(reply, established)),
                            None => {
                                let noise = NoiseHandshake::new(NOISE_PATTERN_XXFALLBACK, &WA_CONN_HEADER)?;
                                xx_server_hello(identity, noise, &client_eph, Pattern::XxFallback)
                            }
                        }
                    }
                    _ => {
                        let noise = NoiseHandshake::new(NOISE_PATTERN_XX, &WA_CONN_HEADER)?;
                        xx_server_hello(identity, noise, &client_eph, Pattern::Xx)
                    }
                }
            }
            Self::AwaitFinish(state) => {
                let AwaitFinish { mut noise, ephemeral, pattern } = *state;
                let finish = message.client_finish.into_option().context("expected ClientFinish")?;
                let client_static = noise.decrypt(finish.r#static.as_deref().context("ClientFinish without static")?)?;
                let client_static: [u8; 32] =
                    client_static.try_into().map_err(|_| anyhow!("client static is not 32 bytes"))?;
                noise.mix_shared_secret(ephemeral.private_key.serialize(), &client_static)?;
                let payload = noise.decrypt(finish.payload.as_deref().context("ClientFinish without payload")?)?;
                let payload = wa::ClientPayload::decode_from_slice(&payload).context("decoding ClientPayload")?;
                Ok(Step::Done(Box::new(Established {
                    transport: Transport::from_handshake(noise)?,
                    client_static,
                    payload,
                    pattern,
                })))
            }
        }
    }
}

/// `<- e, ee, s, es` with the certificate as payload (XX message 2; XXfallback likewise).
fn xx_server_hello<'a>(
    identity: &'a ServerIdentity,
    mut noise: NoiseHandshake,
    client_eph: &[u8; 32],
    pattern: Pattern,
) -> anyhow::Result<Step<'a>> {
    noise.authenticate(client_eph);
    let ephemeral = KeyPair::generate(&mut rand::rng());
    noise.authenticate(ephemeral.public_key.public_key_bytes());
    noise.mix_shared_secret(ephemeral.private_key.serialize(), client_eph)?;
    let enc_static = noise.encrypt(identity.public())?;
    noise.mix_shared_secret(identity.static_key.private_key.serialize(), client_eph)?;
    let enc_cert = noise.encrypt(&identity.cert_chain)?;
    let reply = server_hello(ephemeral.public_key.public_key_bytes(), Some(enc_static), enc_cert);
    Ok(Step::Reply(reply, Responder::AwaitFinish(Box::new(AwaitFinish { noise, ephemeral, pattern }))))
}

/// IK message 1 (`-> e, es, s, ss` + payload) and message 2 (`<- e, ee, se` + certificate).
/// `None` when the client encrypted to a static key we do not hold: answer with XXfallback.
fn ik(
    identity: &ServerIdentity,
    client_eph: &[u8; 32],
    enc_static: &[u8],
    enc_payload: &[u8],
) -> anyhow::Result<Option<(Vec<u8>, Box<Established>)>> {
    let mut noise = NoiseHandshake::new(NOISE_PATTERN_IK, &WA_CONN_HEADER)?;
    noise.authenticate(identity.public());
    noise.authenticate(client_eph);
    noise.mix_shared_secret(identity.static_key.private_key.serialize(), client_eph)?;
    let Ok(client_static) = noise.decrypt(enc_static) else {
        return Ok(None);
    };
    let client_static: [u8; 32] = client_static.try_into().map_err(|_| anyhow!("client static is not 32 bytes"))?;
    noise.mix_shared_secret(identity.static_key.private_key.serialize(), &client_static)?;
    let Ok(payload) = noise.decrypt(enc_payload) else {
        return Ok(None);
    };
    let payload = wa::ClientPayload::decode_from_slice(&payload).context("decoding ClientPayload")?;
    let ephemeral = KeyPair::generate(&mut rand::rng());
    noise.authenticate(ephemeral.public_key.public_key_bytes());
    noise.mix_shared_secret(ephemeral.private_key.serialize(), client_eph)?;
    noise.mix_shared_secret(ephemeral.private_key.serialize(), &client_static)?;
    let enc_cert = noise.encrypt(&identity.cert_chain)?;
    let reply = server_hello(ephemeral.public_key.public_key_bytes(), None, enc_cert);
    let established =
        Established { transport: Transport::from_handshake(noise)?, client_static, payload, pattern: Pattern::Ik };
    Ok(Some((reply, Box::new(established))))
}

fn server_hello(ephemeral: &[u8], enc_static: Option<Vec<u8>>, enc_cert: Vec<u8>) -> Vec<u8> {
    wa::HandshakeMessage {
        server_hello: MessageField::some(handshake_message::ServerHello {
            ephemeral: Some(ephemeral.to_vec()),
            r#static: enc_static,
            payload: Some(enc_cert),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The encrypted transport after the handshake: AES-256-GCM with a per-direction counter.
pub struct Transport {
    write: NoiseCipher,
    read: NoiseCipher,
    write_counter: u32,
    read_counter: u32,
}

impl Transport {
    fn from_handshake(noise: NoiseHandshake) -> anyhow::Result<Self> {
        // `split` yields (initiator→responder, responder→initiator); the client writes with
        // the first, so the server reads with it.
        let (to_server, to_client) = noise.finish()?;
        Ok(Self { write: to_client, read: to_server, write_counter: 0, read_counter: 0 })
    }

    pub fn encrypt(&mut self, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let out = self.write.encrypt_with_counter(self.write_counter, plaintext)?;
        self.write_counter = self.write_counter.wrapping_add(1);
        Ok(out)
    }

    pub fn decrypt(&mut self, ciphertext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut buf = ciphertext.to_vec();
        self.read.decrypt_in_place_with_counter(self.read_counter, &mut buf)?;
        self.read_counter = self.read_counter.wrapping_add(1);
        Ok(buf)
    }
}

/// Strips the connection preamble from the first bytes a client sends: an optional edge
/// routing block (`ED\0\1` + 3-byte length + data) and the `WA` header.
pub fn strip_preamble(data: &[u8]) -> anyhow::Result<&[u8]> {
    let mut rest = data;
    if rest.starts_with(b"ED\x00\x01") {
        if rest.len() < 7 {
            bail!("truncated edge routing preamble");
        }
        let len = ((rest[4] as usize) << 16) | ((rest[5] as usize) << 8) | rest[6] as usize;
        rest = rest.get(7 + len..).context("truncated edge routing preamble")?;
    }
    if !rest.starts_with(&WA_CONN_HEADER) {
        bail!("connection does not start with the WA header");
    }
    Ok(&rest[WA_CONN_HEADER.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsapp_rust::wacore::noise::{IkHandshakeState, IkServerHelloOutcome, XxFallbackHandshakeState, XxHandshakeState};

    fn payload(username: u64) -> Vec<u8> {
        wa::ClientPayload { username: Some(username), device: Some(2), ..Default::default() }.encode_to_vec()
    }

    fn server(key: Option<&[u8]>) -> ServerIdentity {
        ServerIdentity::new(key, 1_800_000_000).unwrap()
    }

    fn roundtrip(server: &mut Transport, client_write: &NoiseCipher, client_read: &NoiseCipher) {
        let from_client = client_write.encrypt_with_counter(0, b"ping").unwrap();
        assert_eq!(server.decrypt(&from_client).unwrap(), b"ping");
        let mut from_server = server.encrypt(b"pong").unwrap();
        client_read.decrypt_in_place_with_counter(0, &mut from_server).unwrap();
        assert_eq!(from_server, b"pong");
    }

    /// The client crate's own XX initiator completes against our responder (its signature
    /// checks are off in this crate's test build, like in wagate's tests).
    #[test]
    fn xx_with_the_clients_initiator() {
        let identity = server(None);
        let client_static = KeyPair::generate(&mut rand::rng());
        let mut client = XxHandshakeState::new(client_static.clone(), payload(15550100001), &WA_CONN_HEADER).unwrap();
        let Step::Reply(hello, responder) = Responder::new(&identity).feed(&client.build_client_hello().unwrap()).unwrap() else {
            panic!("XX answers with a ServerHello")
        };
        let finish = client.read_server_hello_and_build_client_finish(&hello).expect("the client accepts the chain's shape");
        let Step::Done(done) = responder.feed(&finish).unwrap() else { panic!("XX ends with ClientFinish") };
        let mut done = *done;
        assert_eq!(done.pattern, Pattern::Xx);
        assert_eq!(done.client_static, client_static.public_key.public_key_bytes());
        assert_eq!(done.payload.username, Some(15550100001));
        let out = client.finish().unwrap();
        assert_eq!(out.server_cert_chain.leaf_key, identity.public());
        assert!(out.server_cert_chain.leaf_not_after > 1_800_000_000, "valid long enough for IK");
        roundtrip(&mut done.transport, &out.write_cipher, &out.read_cipher);
    }

    #[test]
    fn ik_and_the_fallback_when_the_server_key_changed() {
        let identity = server(None);
        let client_static = KeyPair::generate(&mut rand::rng());
        let server_pub: [u8; 32] = identity.public().try_into().unwrap();
        let mut ik = IkHandshakeState::new(client_static.clone(), server_pub, payload(1), &WA_CONN_HEADER).unwrap();
        let Step::ReplyAndDone(hello, done) = Responder::new(&identity).feed(&ik.build_client_hello().unwrap()).unwrap() else {
            panic!("IK completes in one round trip")
        };
        let mut done = *done;
        assert_eq!(done.pattern, Pattern::Ik);
        let IkServerHelloOutcome::Continue(out) = ik.read_server_hello(&hello).unwrap() else { panic!("no fallback") };
        roundtrip(&mut done.transport, &out.write_cipher, &out.read_cipher);

        // The emulator restarted without its key: XXfallback.
        let restarted = server(None);
        let mut ik = IkHandshakeState::new(client_static.clone(), server_pub, payload(1), &WA_CONN_HEADER).unwrap();
        let Step::Reply(hello, responder) = Responder::new(&restarted).feed(&ik.build_client_hello().unwrap()).unwrap() else {
            panic!("fallback answers with a full ServerHello")
        };
        let IkServerHelloOutcome::Fallback(inputs) = ik.read_server_hello(&hello).unwrap() else { panic!("fallback") };
        let mut fallback = XxFallbackHandshakeState::from_ik_failure(*inputs, &WA_CONN_HEADER).unwrap();
        let finish = fallback.build_client_finish().unwrap();
        let Step::Done(done) = responder.feed(&finish).unwrap() else { panic!("done") };
        let mut done = *done;
        assert_eq!(done.pattern, Pattern::XxFallback);
        let out = fallback.finish().unwrap();
        roundtrip(&mut done.transport, &out.write_cipher, &out.read_cipher);

        // A persisted key is the same identity.
        let again = server(Some(&identity.private_bytes()));
        assert_eq!(again.public(), identity.public());
    }

    #[test]
    fn preamble() {
        assert_eq!(strip_preamble(b"WA\x06\x03rest").unwrap(), b"rest");
        assert_eq!(strip_preamble(b"ED\x00\x01\x00\x00\x02xyWA\x06\x03rest").unwrap(), b"rest");
        assert!(strip_preamble(b"GET / HTTP/1.1").is_err());
        assert!(strip_preamble(b"ED\x00\x01\x00\x00\x09xy").is_err());
    }
}
