//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use connhealth_core::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Signs (and verifies) Standard Webhooks messages with a `whsec_` secret.
#[derive(Clone)]
pub struct Signer {
    key: Secret,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer([redacted])")
    }
}

impl Signer {
    /// From a `whsec_` + base64 secret; the error says what is wrong, never the value.
    pub fn new(secret: &Secret) -> Result<Signer, String> {
        let s = secret.expose().trim();
        let Some(b64) = s.strip_prefix("whsec_") else {
            return Err("the secret must start with whsec_".into());
        };
        let key = STANDARD
            .decode(b64)
            .map_err(|_| "the secret after whsec_ is not base64".to_owned())?;
        if key.is_empty() {
            return Err("the secret after whsec_ is empty".into());
        }
        // Kept as the base64 text (Secret holds a str); decoded per signature.
        Ok(Signer {
            key: Secret::new(b64.to_owned()),
        })
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let key = STANDARD.decode(self.key.expose()).unwrap_or_default();
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` header value.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }

    /// Whether a `webhook-signature` header (space-separated `v1,…` entries) holds a valid
    /// signature of the message (compared in constant time).
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        header.split(' ').any(|entry| {
            let Some(sig) = entry.strip_prefix("v1,") else {
                return false;
            };
            let Ok(sig) = STANDARD.decode(sig) else {
                return false;
            };
            self.mac(id, timestamp, body).verify_slice(&sig).is_ok()
        })
    }
}
