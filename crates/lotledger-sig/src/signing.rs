//! Signing helpers for tests and demos: they build the signatures the Aleph Python SDK builds
//! (`ETHAccount.sign_message`, `SOLAccount.sign_message`), byte for byte.
//!
//! Always compiled (the `signing` cargo feature is accepted and changes nothing): they are pure,
//! small, and need no dependency the verifier does not already have.

use ed25519_dalek::Signer as _;
use k256::ecdsa::SigningKey;
use sha3::{Digest, Keccak256};

use crate::evm::{address_of, eip191_hash};

fn evm_key(secret: &[u8; 32]) -> SigningKey {
    #[allow(clippy::expect_used)] // documented panic on a test-supplied key
    SigningKey::from_bytes(&(*secret).into())
        .expect("the secret key is zero or not below the secp256k1 order")
}

/// `0x` + hex of the 65-byte `r ‖ s ‖ v` EIP-191 `personal_sign` signature of `buffer`, with
/// `v` = 27 or 28 and low `s` (RFC 6979: the same bytes as the Python SDK).
///
/// # Panics
/// If `secret` is zero or not below the secp256k1 group order (not a private key).
pub fn sign_evm(secret: &[u8; 32], buffer: &[u8]) -> String {
    let (signature, recovery_id) = evm_key(secret).sign_prehash_recoverable(&eip191_hash(buffer));
    let v = 27 + u8::from(recovery_id.is_y_odd());
    format!("0x{}{:02x}", hex::encode(signature.to_bytes()), v)
}

/// The EIP-55 checksummed address of a secp256k1 private key, as the SDK's `get_address()`
/// returns it (e.g. `0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A` for 32 bytes of 0x11).
///
/// # Panics
/// If `secret` is zero or not below the secp256k1 group order (not a private key).
pub fn evm_address(secret: &[u8; 32]) -> String {
    let lower = address_of(evm_key(secret).verifying_key());
    let digits = lower.trim_start_matches("0x");
    let digest = Keccak256::digest(digits.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in digits.chars().enumerate() {
        let byte = digest.get(i / 2).copied().unwrap_or_default();
        let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
        out.push(if nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            c
        });
    }
    out
}

/// Signs `buffer` with the ed25519 key whose 32-byte seed is `secret`; returns the `signature`
/// field of the envelope, laid out as the SDK's `SOLAccount.sign_message` writes it
/// (`{"publicKey": "…", "signature": "…"}`, Python's default separators, no `version`), and the
/// base58 public key, which is the sender.
pub fn sign_sol(secret: &[u8; 32], buffer: &[u8]) -> (String, String) {
    let key = ed25519_dalek::SigningKey::from_bytes(secret);
    let public_key = bs58::encode(key.verifying_key().to_bytes()).into_string();
    let signature = bs58::encode(key.sign(buffer).to_bytes()).into_string();
    (
        format!(r#"{{"publicKey": "{public_key}", "signature": "{signature}"}}"#),
        public_key,
    )
}
