//! Verification of Aleph message envelopes (SPEC Part I 5): the inline item hash and the
//! sender's signature, as a pyaleph node checks them before the credit rules.
//!
//! Pure code: no IO, no async, no clock. A node with an RPC endpoint may also accept smart-wallet
//! signatures (ERC-1271 / ERC-6492) on ETH; those need the chain and are refused here, like a
//! pyaleph node without `rpc_url` refuses them.
//!
//! Chains are matched on the **wire value** of aleph-message's `Chain` enum, which is what the
//! `chain` field carries and what the signed buffer contains: `ARB` (not `ARBITRUM`), `OP`,
//! `FRAX`, `WLD`, `ES` (Eclipse). The tables are [`EVM_CHAINS`], [`SVM_CHAINS`] and
//! [`UNSUPPORTED_CHAINS`]; any other string (including enum *names* such as `ARBITRUM`, and the
//! enum values pyaleph has no verifier for, `AURORA` and `STT`) is an unknown chain, as in pyaleph.

mod evm;
mod signing;
mod svm;

use sha2::{Digest, Sha256};

pub use evm::{Recovery, eip191_hash, recover as recover_evm};
pub use lotledger_core::envelope::Envelope;
pub use signing::{evm_address, sign_evm, sign_sol};

/// EVM chains: `0x`-hex 65-byte secp256k1 signatures over the EIP-191 `personal_sign` of the
/// verification buffer. Wire values of pyaleph's verifier table (`src/aleph/chains/signature_verifier.py`).
pub const EVM_CHAINS: &[&str] = &[
    "ETH",
    "ETHERLINK",
    "ARB",
    "BASE",
    "BLAST",
    "BOB",
    "BSC",
    "CYBER",
    "FRAX",
    "HYPE",
    "INK",
    "LENS",
    "LINEA",
    "LISK",
    "METIS",
    "MODE",
    "NEO",
    "OP",
    "POL",
    "SONIC",
    "UNICHAIN",
    "WLD",
    "ZORA",
];

/// Solana-style chains (SOL, and Eclipse whose wire value is `ES`): a JSON signature object with
/// base58 ed25519 signature and public key.
pub const SVM_CHAINS: &[&str] = &["SOL", "ES"];

/// Chains a pyaleph node verifies but lotledger does not: rejected with
/// [`EnvelopeError::UnsupportedChain`].
pub const UNSUPPORTED_CHAINS: &[&str] = &["AVAX", "CSDK", "DOT", "NULS", "NULS2", "TEZOS"];

/// The signature scheme of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainFamily {
    /// secp256k1, EIP-191 `personal_sign`, address recovery.
    Evm,
    /// ed25519 with a base58 public key as sender (SOL, ES).
    Svm,
    /// Known to pyaleph, not verified by lotledger.
    Unsupported,
}

/// The family of a chain's wire value (case-sensitive, as pyaleph), `None` for an unknown chain.
pub fn chain_family(chain: &str) -> Option<ChainFamily> {
    if EVM_CHAINS.contains(&chain) {
        Some(ChainFamily::Evm)
    } else if SVM_CHAINS.contains(&chain) {
        Some(ChainFamily::Svm)
    } else if UNSUPPORTED_CHAINS.contains(&chain) {
        Some(ChainFamily::Unsupported)
    } else {
        None
    }
}

/// Why an envelope is refused. The `Display` texts are shown to API clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("Invalid message format: field 'chain' is required")]
    MissingChain,
    #[error("Invalid message format: field 'sender' is required")]
    MissingSender,
    /// No `signature`, or an empty one.
    #[error("The signature of the message is invalid: the message has no signature")]
    MissingSignature,
    /// `item_type` is present and is not `inline` (`storage`, `ipfs`, …).
    #[error("Invalid message format: only inline items are supported (item_type is '{0}')")]
    NotInline(String),
    /// An inline item (or one without `item_type`) without `item_content`.
    #[error("Invalid message format: item_content is required (only inline items are supported)")]
    MissingItemContent,
    #[error(
        "Invalid message format: 'item_hash' does not match 'sha256(item_content)': \
         expected {expected}, got {given}"
    )]
    ItemHashMismatch { expected: String, given: String },
    #[error("Unknown chain for validation: {0}")]
    UnknownChain(String),
    #[error("Unsupported chain for signature verification: {0}")]
    UnsupportedChain(String),
    /// The signature does not verify. The text is pyaleph's; the reason, for logs, is the
    /// [`SignatureFault`] (also reachable as the error's `source()`).
    #[error("The signature of the message is invalid")]
    InvalidSignature(#[source] SignatureFault),
}

/// The precise reason a signature was refused (for logs; clients see
/// `The signature of the message is invalid`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureFault {
    #[error("the signature is not hexadecimal")]
    NotHex,
    #[error("the signature has {got} bytes, expected {expected}")]
    WrongLength { expected: usize, got: usize },
    #[error("recovery byte v = {0} is not one of 0, 1, 27, 28 or 35 and above")]
    BadRecoveryByte(u8),
    #[error("r or s is zero or not below the curve order")]
    ScalarOutOfRange,
    #[error("no public key can be recovered from the signature")]
    RecoveryFailed,
    #[error("the signature recovers {recovered}, not the sender {sender}")]
    AddressMismatch { recovered: String, sender: String },
    #[error("smart-wallet signatures (ERC-6492) need a chain RPC and are not supported")]
    SmartWallet,
    #[error("the signature is not a JSON object: {0}")]
    NotJsonObject(String),
    #[error("the signature object has no string field '{0}'")]
    MissingJsonField(&'static str),
    #[error("field '{0}' of the signature object is not base58")]
    NotBase58(&'static str),
    #[error("unsupported signature version {0}")]
    UnsupportedVersion(String),
    #[error("the signature's public key {public_key} is not the sender {sender}")]
    PublicKeyMismatch { public_key: String, sender: String },
    #[error("the public key is not a valid ed25519 point")]
    BadPublicKey,
    #[error("the ed25519 signature does not verify")]
    Rejected,
}

/// Lowercase hex SHA-256 of the item content's UTF-8 bytes: the `item_hash` of an inline item.
pub fn item_hash_of(item_content: &str) -> String {
    hex::encode(Sha256::digest(item_content.as_bytes()))
}

/// The bytes a sender signs: UTF-8 of `"{chain}\n{sender}\n{type}\n{item_hash}"`.
pub fn verification_buffer(
    chain: &str,
    sender: &str,
    message_type: &str,
    item_hash: &str,
) -> Vec<u8> {
    format!("{chain}\n{sender}\n{message_type}\n{item_hash}").into_bytes()
}

/// Why a message received from the network (a POST to the API, a message a followed node lists)
/// is refused before the credit rules: not a POST, or an envelope [`verify`] rejects; `None`
/// when it goes on to the rules.
pub fn refusal(envelope: &Envelope) -> Option<String> {
    if envelope.message_type != "POST" {
        Some(lotledger_core::envelope::unsupported_type(
            &envelope.message_type,
        ))
    } else {
        verify(envelope).err().map(|e| e.to_string())
    }
}

/// Checks an envelope as a pyaleph node does before the credit rules: required fields, inline
/// item whose `item_hash` is the SHA-256 of `item_content`, a chain lotledger can verify, and the
/// sender's signature over the verification buffer.
pub fn verify(envelope: &Envelope) -> Result<(), EnvelopeError> {
    let chain = envelope
        .chain
        .as_deref()
        .ok_or(EnvelopeError::MissingChain)?;
    let sender = envelope
        .sender
        .as_deref()
        .ok_or(EnvelopeError::MissingSender)?;
    let signature = envelope
        .signature
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or(EnvelopeError::MissingSignature)?;

    match envelope.item_type.as_deref() {
        None | Some("inline") => {}
        Some(other) => return Err(EnvelopeError::NotInline(other.to_owned())),
    }
    let item_content = envelope
        .item_content
        .as_deref()
        .ok_or(EnvelopeError::MissingItemContent)?;
    let expected = item_hash_of(item_content);
    if envelope.item_hash != expected {
        return Err(EnvelopeError::ItemHashMismatch {
            expected,
            given: envelope.item_hash.clone(),
        });
    }

    let family = chain_family(chain).ok_or_else(|| EnvelopeError::UnknownChain(chain.into()))?;
    let buffer = verification_buffer(chain, sender, &envelope.message_type, &envelope.item_hash);
    match family {
        ChainFamily::Evm => evm::verify(&buffer, sender, signature),
        ChainFamily::Svm => svm::verify(&buffer, sender, signature),
        ChainFamily::Unsupported => return Err(EnvelopeError::UnsupportedChain(chain.into())),
    }
    .map_err(EnvelopeError::InvalidSignature)
}
