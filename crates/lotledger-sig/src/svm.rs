//! Solana-style signatures (SOL, ES): `signature` is a JSON object
//! `{"signature": base58, "publicKey": base58, "version"?: 1}`; the public key is the sender and
//! the ed25519 signature covers the verification buffer. Mirrors pyaleph's `SolanaConnector`.

use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::Value;

use crate::SignatureFault;

/// Base58 as the Python `base58` package reads it: trailing whitespace is ignored.
fn decode_base58(text: &str, field: &'static str) -> Result<Vec<u8>, SignatureFault> {
    bs58::decode(text.trim_end())
        .into_vec()
        .map_err(|_| SignatureFault::NotBase58(field))
}

/// `signature.get("version", 1) != 1` in Python: an absent version is 1; `1`, `1.0` and (Python
/// being Python) `true` compare equal to 1.
fn version_is_one(version: Option<&Value>) -> bool {
    match version {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() == Some(1.0),
        Some(_) => false,
    }
}

fn string_field<'a>(
    object: &'a serde_json::Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, SignatureFault> {
    object
        .get(field)
        .and_then(Value::as_str)
        .ok_or(SignatureFault::MissingJsonField(field))
}

pub(crate) fn verify(buffer: &[u8], sender: &str, signature: &str) -> Result<(), SignatureFault> {
    let value: Value = serde_json::from_str(signature)
        .map_err(|e| SignatureFault::NotJsonObject(e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(SignatureFault::NotJsonObject(
            "it is valid JSON but not an object".into(),
        ));
    };
    let signature_b58 = string_field(&object, "signature")?;
    let public_key_b58 = string_field(&object, "publicKey")?;
    let signature_bytes = decode_base58(signature_b58, "signature")?;
    let public_key_bytes = decode_base58(public_key_b58, "publicKey")?;

    let version = object.get("version");
    if !version_is_one(version) {
        return Err(SignatureFault::UnsupportedVersion(
            version.map(Value::to_string).unwrap_or_default(),
        ));
    }
    if sender != public_key_b58 {
        return Err(SignatureFault::PublicKeyMismatch {
            public_key: public_key_b58.to_owned(),
            sender: sender.to_owned(),
        });
    }

    let got = public_key_bytes.len();
    let public_key: [u8; 32] = public_key_bytes
        .try_into()
        .map_err(|_| SignatureFault::WrongLength { expected: 32, got })?;
    let got = signature_bytes.len();
    let signature_bytes: [u8; 64] = signature_bytes
        .try_into()
        .map_err(|_| SignatureFault::WrongLength { expected: 64, got })?;
    let key = VerifyingKey::from_bytes(&public_key).map_err(|_| SignatureFault::BadPublicKey)?;
    // `verify_strict` refuses small-order keys and R, as libsodium (PyNaCl) does.
    key.verify_strict(buffer, &Signature::from_bytes(&signature_bytes))
        .map_err(|_| SignatureFault::Rejected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions() {
        assert!(version_is_one(None));
        assert!(version_is_one(Some(&json!(1))));
        assert!(version_is_one(Some(&json!(1.0))));
        assert!(version_is_one(Some(&json!(true))));
        assert!(!version_is_one(Some(&json!(2))));
        assert!(!version_is_one(Some(&json!("1"))));
        assert!(!version_is_one(Some(&Value::Null)));
        assert!(!version_is_one(Some(&json!(false))));
    }
}
