//! Standard Webhooks signatures: `v1,<base64 of HMAC-SHA256(id.timestamp.body)>`, keyed with
//! the bytes of the secret after `whsec_`; several signatures are separated by spaces.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use wagate_core::WebhookSecret;

/// The signature of one message with one secret.
pub fn sign(secret: &WebhookSecret, id: &str, timestamp: i64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret.key());
    let mut mac = ring::hmac::Context::with_key(&key);
    for part in [id.as_bytes(), b".", timestamp.to_string().as_bytes(), b".", body.as_bytes()] {
        mac.update(part);
    }
    format!("v1,{}", STANDARD.encode(mac.sign().as_ref()))
}

/// The `webhook-signature` header: one signature per secret, in order, space-separated.
pub fn signature_header(secrets: &[&WebhookSecret], id: &str, timestamp: i64, body: &str) -> String {
    secrets.iter().map(|secret| sign(secret, id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn the_specification_vector_signs_as_published() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, r#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn every_secret_signs_in_turn() {
        let (a, b) = (WebhookSecret::generate(), WebhookSecret::generate());
        let header = signature_header(&[&a, &b], "evt_1", 1, "{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts, vec![sign(&a, "evt_1", 1, "{}"), sign(&b, "evt_1", 1, "{}")]);
        assert_ne!(parts[0], parts[1]);
        assert_ne!(sign(&a, "evt_1", 2, "{}"), parts[0], "the timestamp is signed");
        assert_ne!(sign(&a, "evt_2", 1, "{}"), parts[0], "the id is signed");
        assert_ne!(sign(&a, "evt_1", 1, "{ }"), parts[0], "the body is signed");
    }
}
