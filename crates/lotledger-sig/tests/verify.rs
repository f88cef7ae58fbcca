//! Envelope verification against messages built and signed by the real Aleph Python SDK
//! (aleph-sdk-python 2.4.0; generator: `fixtures/make_vectors.py`), plus tampering, chain tables
//! and round trips through this crate's signing helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lotledger_sig::{
    ChainFamily, Envelope, EnvelopeError, SignatureFault, UNSUPPORTED_CHAINS, chain_family,
    evm_address, item_hash_of, sign_evm, sign_sol, verification_buffer, verify,
};
use serde_json::Value;

/// `ETHAccount(private_key=b"\x11" * 32)` through `generate_signed_message` (what `create_post`
/// does), channel ALEPH_CREDIT, clock pinned at 1772330400.
const SDK_ETH: &str = r#"{"chain":"ETH","sender":"0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A","type":"POST","channel":"ALEPH_CREDIT","item_type":"inline","item_content":"{\"address\":\"0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A\",\"time\":1772330400.0,\"content\":{\"transfer\":{\"credits\":[{\"address\":\"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\",\"amount\":1000000,\"expiration\":1790000000000}]}},\"type\":\"aleph_credit_transfer\"}","item_hash":"0805d4ae90138f1f934620e8319d622541f52f032ddb29d30c29a67f5406eb25","time":1772330400.0,"signature":"0xd2a9b955a47e87d6e9090f3f50d941ec5ce47c7ad447bb7aafa23933d3224ae13e64ebda694044844e56408cf03ad46a819d075f20efb0f25272f573daf333971c"}"#;

/// `SOLAccount(private_key=b"\x11" * 32)`, same path.
const SDK_SOL: &str = r#"{"chain":"SOL","sender":"F25s3DdjXdCxYBhh2z8FBusVEMT4b9bGNFVKJi3wFoF4","type":"POST","channel":"ALEPH_CREDIT","item_type":"inline","item_content":"{\"address\":\"F25s3DdjXdCxYBhh2z8FBusVEMT4b9bGNFVKJi3wFoF4\",\"time\":1772330400.0,\"content\":{\"transfer\":{\"credits\":[{\"address\":\"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\",\"amount\":1000000,\"expiration\":1790000000000}]}},\"type\":\"aleph_credit_transfer\"}","item_hash":"9d93bc06e43a3c880c6aa3623d622223934524c7d2ce4072d3b49f91311f4a49","time":1772330400.0,"signature":"{\"publicKey\": \"F25s3DdjXdCxYBhh2z8FBusVEMT4b9bGNFVKJi3wFoF4\", \"signature\": \"3PRPkAi9RDtKgeqHJWX1hELdm8WuxpuUjGcSksZ37deXTnWakrkY7rm8VChKCxXS1AXLaTgfwryfy792imJWFYM3\"}"}"#;

/// `ETHAccount.sign_message` on an envelope with chain "ARB" (wire value of Chain.ARBITRUM).
const SDK_ARB: &str = r#"{"chain":"ARB","sender":"0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A","type":"POST","channel":"ALEPH_CREDIT","item_type":"inline","item_content":"{\"address\":\"0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A\",\"time\":1772330400.0,\"content\":{\"transfer\":{\"credits\":[{\"address\":\"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\",\"amount\":1000000,\"expiration\":1790000000000}]}},\"type\":\"aleph_credit_transfer\"}","item_hash":"0805d4ae90138f1f934620e8319d622541f52f032ddb29d30c29a67f5406eb25","time":1772330400.0,"signature":"0x73dcd587f4f082b36020396d35a4c8659e4bf650e47b919072c6e65e24b6b4c203800d63136e8c3c660c89f9c21823d7baa976e852ab3d300ec3d420f9422f8b1c"}"#;

const SECRET: [u8; 32] = [0x11; 32];
const INVALID: &str = "The signature of the message is invalid";

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn envelope(value: &Value) -> Envelope {
    Envelope::from_json(value).unwrap()
}

fn with(text: &str, key: &str, new: Value) -> Envelope {
    let mut value = json(text);
    match new {
        Value::Null => {
            value.as_object_mut().unwrap().remove(key);
        }
        new => {
            value[key] = new;
        }
    }
    envelope(&value)
}

fn fault(result: Result<(), EnvelopeError>) -> SignatureFault {
    match result {
        Err(e @ EnvelopeError::InvalidSignature(_)) => {
            assert_eq!(e.to_string(), INVALID);
            let EnvelopeError::InvalidSignature(fault) = e else {
                unreachable!()
            };
            fault
        }
        other => panic!("expected an invalid signature, got {other:?}"),
    }
}

fn buffer_of(e: &Envelope) -> Vec<u8> {
    verification_buffer(
        e.chain.as_deref().unwrap(),
        e.sender.as_deref().unwrap(),
        &e.message_type,
        &e.item_hash,
    )
}

// ---------------------------------------------------------------- the SDK's own messages

#[test]
fn sdk_vectors_verify() {
    for text in [SDK_ETH, SDK_SOL, SDK_ARB] {
        let e = envelope(&json(text));
        assert_eq!(verify(&e), Ok(()), "{text}");
        assert_eq!(
            item_hash_of(e.item_content.as_deref().unwrap()),
            e.item_hash
        );
    }
}

#[test]
fn helpers_reproduce_the_sdk_byte_for_byte() {
    let eth = envelope(&json(SDK_ETH));
    // The SDK sends the EIP-55 checksummed address as sender.
    assert_eq!(evm_address(&SECRET), eth.sender.clone().unwrap());
    // RFC 6979 on both sides: the very same signature, v = 28 (27/28 form).
    assert_eq!(
        sign_evm(&SECRET, &buffer_of(&eth)),
        eth.signature.clone().unwrap()
    );
    assert!(eth.signature.as_deref().unwrap().ends_with("1c"));
    let arb = envelope(&json(SDK_ARB));
    assert_eq!(
        sign_evm(&SECRET, &buffer_of(&arb)),
        arb.signature.clone().unwrap()
    );

    let sol = envelope(&json(SDK_SOL));
    let (signature, public_key) = sign_sol(&SECRET, &buffer_of(&sol));
    assert_eq!(public_key, sol.sender.clone().unwrap());
    assert_eq!(signature, sol.signature.clone().unwrap());
}

#[test]
fn verification_buffer_layout() {
    assert_eq!(
        verification_buffer("ETH", "0xAbc", "POST", "00ff"),
        b"ETH\n0xAbc\nPOST\n00ff".to_vec()
    );
    let eth = envelope(&json(SDK_ETH));
    assert_eq!(
        String::from_utf8(buffer_of(&eth)).unwrap(),
        "ETH\n0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A\nPOST\n\
         0805d4ae90138f1f934620e8319d622541f52f032ddb29d30c29a67f5406eb25"
    );
    assert_eq!(
        item_hash_of(""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

// ---------------------------------------------------------------- EVM tampering

fn eth_signature_bytes() -> Vec<u8> {
    let e = envelope(&json(SDK_ETH));
    hex::decode(e.signature.unwrap().trim_start_matches("0x")).unwrap()
}

fn eth_with_signature_bytes(bytes: &[u8]) -> Envelope {
    with(
        SDK_ETH,
        "signature",
        Value::String(format!("0x{}", hex::encode(bytes))),
    )
}

#[test]
fn eth_flipped_signature_byte_is_invalid() {
    for index in [0, 20, 40, 63] {
        let mut bytes = eth_signature_bytes();
        bytes[index] ^= 0x01;
        let f = fault(verify(&eth_with_signature_bytes(&bytes)));
        assert!(
            matches!(
                f,
                SignatureFault::AddressMismatch { .. } | SignatureFault::RecoveryFailed
            ),
            "byte {index}: {f:?}"
        );
    }
    // The other parity recovers another key.
    let mut bytes = eth_signature_bytes();
    bytes[64] = 27;
    let f = fault(verify(&eth_with_signature_bytes(&bytes)));
    let SignatureFault::AddressMismatch { recovered, sender } = f else {
        panic!("{f:?}")
    };
    assert_eq!(sender, "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A");
    assert_ne!(recovered.to_lowercase(), sender.to_lowercase());
}

#[test]
fn eth_other_sender_is_invalid_any_case_of_the_sender_is_fine() {
    let e = with(
        SDK_ETH,
        "sender",
        Value::String("0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into()),
    );
    assert!(matches!(
        fault(verify(&e)),
        SignatureFault::AddressMismatch { .. }
    ));

    // The sender is part of the signed buffer: another casing changes the buffer, so it is not
    // the same message; but the address comparison itself ignores case.
    let lower = "0x19e7e376e7c213b7e7e7e46cc70a5dd086daff2a";
    let mut e = with(SDK_ETH, "sender", Value::String(lower.into()));
    assert!(matches!(
        fault(verify(&e)),
        SignatureFault::AddressMismatch { .. }
    ));
    e.signature = Some(sign_evm(&SECRET, &buffer_of(&e)));
    assert_eq!(verify(&e), Ok(()));
    e.sender = Some(lower.to_uppercase().replacen("0X", "0x", 1));
    e.signature = Some(sign_evm(&SECRET, &buffer_of(&e)));
    assert_eq!(verify(&e), Ok(()));
}

#[test]
fn eth_accepted_encodings_follow_eth_account() {
    let bytes = eth_signature_bytes();
    let text = hex::encode(&bytes);
    // No prefix, 0X prefix, upper-case digits.
    for signature in [
        text.clone(),
        format!("0X{text}"),
        format!("0x{}", text.to_uppercase()),
    ] {
        let e = with(SDK_ETH, "signature", Value::String(signature.clone()));
        assert_eq!(verify(&e), Ok(()), "{signature}");
    }
    // v as 0/1 and as an EIP-155 value.
    for v in [1u8, 36, 38] {
        let mut b = bytes.clone();
        b[64] = v;
        assert_eq!(verify(&eth_with_signature_bytes(&b)), Ok(()), "v = {v}");
    }
    // The malleated high-s twin (s' = n - s, parity flipped) is accepted, as eth-account does.
    let mut b = bytes.clone();
    let s: [u8; 32] = b[32..64].try_into().unwrap();
    b[32..64].copy_from_slice(&order_minus(&s));
    b[64] = 27;
    assert_eq!(verify(&eth_with_signature_bytes(&b)), Ok(()));
}

/// n − s for the secp256k1 group order n (big-endian).
fn order_minus(s: &[u8; 32]) -> [u8; 32] {
    let n =
        hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141").unwrap();
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(n[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = u8::try_from(d).unwrap();
    }
    out
}

#[test]
fn eth_malformed_signatures() {
    let bytes = eth_signature_bytes();
    let cases: Vec<(String, SignatureFault)> = vec![
        ("0xnothex".into(), SignatureFault::NotHex),
        (
            format!("0x{} ", hex::encode(&bytes)),
            SignatureFault::NotHex,
        ),
        (
            format!("0x{}", hex::encode(&bytes[..64])),
            SignatureFault::WrongLength {
                expected: 65,
                got: 64,
            },
        ),
        (
            format!("0x{}00", hex::encode(&bytes)),
            SignatureFault::WrongLength {
                expected: 65,
                got: 66,
            },
        ),
        (
            "0x".into(),
            SignatureFault::WrongLength {
                expected: 65,
                got: 0,
            },
        ),
        (
            format!("0x{}02", hex::encode(&bytes[..64])),
            SignatureFault::BadRecoveryByte(2),
        ),
        (
            format!("0x{}1b", "00".repeat(64)),
            SignatureFault::ScalarOutOfRange,
        ),
        (
            format!("0x{}1b", "ff".repeat(64)),
            SignatureFault::ScalarOutOfRange,
        ),
        (
            format!("0x{}{}", "11".repeat(33), "6492".repeat(16)),
            SignatureFault::SmartWallet,
        ),
        // A SOL-style signature on an EVM chain.
        (
            envelope(&json(SDK_SOL)).signature.unwrap(),
            SignatureFault::NotHex,
        ),
    ];
    for (signature, expected) in cases {
        let e = with(SDK_ETH, "signature", Value::String(signature.clone()));
        assert_eq!(fault(verify(&e)), expected, "{signature}");
    }
}

// ---------------------------------------------------------------- SOL tampering

fn sol_signature_object() -> serde_json::Map<String, Value> {
    let e = envelope(&json(SDK_SOL));
    match json(&e.signature.unwrap()) {
        Value::Object(o) => o,
        other => panic!("{other}"),
    }
}

fn sol_with_signature_object(object: serde_json::Map<String, Value>) -> Envelope {
    with(
        SDK_SOL,
        "signature",
        Value::String(Value::Object(object).to_string()),
    )
}

#[test]
fn sol_signature_json_layout_from_the_sdk() {
    let o = sol_signature_object();
    let keys: Vec<&str> = o.keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 2);
    assert!(o.contains_key("publicKey") && o.contains_key("signature"));
    let e = envelope(&json(SDK_SOL));
    assert!(e.signature.as_deref().unwrap().starts_with(
        r#"{"publicKey": "F25s3DdjXdCxYBhh2z8FBusVEMT4b9bGNFVKJi3wFoF4", "signature": ""#
    ));
}

#[test]
fn sol_flipped_signature_byte_is_invalid() {
    for index in [0, 31, 32, 63] {
        let mut o = sol_signature_object();
        let mut sig = bs58::decode(o["signature"].as_str().unwrap())
            .into_vec()
            .unwrap();
        sig[index] ^= 0x01;
        o.insert(
            "signature".into(),
            Value::String(bs58::encode(sig).into_string()),
        );
        assert_eq!(
            fault(verify(&sol_with_signature_object(o))),
            SignatureFault::Rejected,
            "byte {index}"
        );
    }
}

#[test]
fn sol_sender_must_be_the_public_key() {
    // Another sender: the publicKey no longer matches it.
    let (_, other) = sign_sol(&[0x22; 32], b"x");
    let e = with(SDK_SOL, "sender", Value::String(other.clone()));
    assert_eq!(
        fault(verify(&e)),
        SignatureFault::PublicKeyMismatch {
            public_key: "F25s3DdjXdCxYBhh2z8FBusVEMT4b9bGNFVKJi3wFoF4".into(),
            sender: other.clone(),
        }
    );
    // Another publicKey equal to the sender: the signature is not theirs.
    let mut o = sol_signature_object();
    o.insert("publicKey".into(), Value::String(other.clone()));
    let mut e = sol_with_signature_object(o);
    e.sender = Some(other);
    assert_eq!(fault(verify(&e)), SignatureFault::Rejected);
}

#[test]
fn sol_versions() {
    let mut o = sol_signature_object();
    o.insert("version".into(), Value::from(1));
    assert_eq!(verify(&sol_with_signature_object(o.clone())), Ok(()));
    o.insert("version".into(), Value::from(2));
    assert_eq!(
        fault(verify(&sol_with_signature_object(o))),
        SignatureFault::UnsupportedVersion("2".into())
    );
}

#[test]
fn sol_malformed_signatures() {
    let o = sol_signature_object();
    let sig = o["signature"].as_str().unwrap().to_owned();
    let pk = o["publicKey"].as_str().unwrap().to_owned();
    type Check = fn(&SignatureFault) -> bool;
    let cases: Vec<(String, Check)> = vec![
        ("not json".into(), |f| {
            matches!(f, SignatureFault::NotJsonObject(_))
        }),
        (r#"["a"]"#.into(), |f| {
            matches!(f, SignatureFault::NotJsonObject(_))
        }),
        (format!(r#"{{"publicKey": "{pk}"}}"#), |f| {
            *f == SignatureFault::MissingJsonField("signature")
        }),
        (format!(r#"{{"signature": "{sig}"}}"#), |f| {
            *f == SignatureFault::MissingJsonField("publicKey")
        }),
        (format!(r#"{{"signature": 5, "publicKey": "{pk}"}}"#), |f| {
            *f == SignatureFault::MissingJsonField("signature")
        }),
        (
            format!(r#"{{"signature": "0OIl", "publicKey": "{pk}"}}"#),
            |f| *f == SignatureFault::NotBase58("signature"),
        ),
        (
            format!(r#"{{"signature": "{sig}", "publicKey": "{pk}0"}}"#),
            |f| *f == SignatureFault::NotBase58("publicKey"),
        ),
        (
            format!(r#"{{"signature": "{}", "publicKey": "{pk}"}}"#, &sig[..40]),
            |f| matches!(f, SignatureFault::WrongLength { expected: 64, .. }),
        ),
        // An EVM signature on a SOL chain.
        (envelope(&json(SDK_ETH)).signature.unwrap(), |f| {
            matches!(f, SignatureFault::NotJsonObject(_))
        }),
    ];
    for (signature, check) in cases {
        let e = with(SDK_SOL, "signature", Value::String(signature.clone()));
        let f = fault(verify(&e));
        assert!(check(&f), "{signature}: {f:?}");
    }
}

#[test]
fn sol_short_public_key_equal_to_sender() {
    let o = sol_signature_object();
    let sig = o["signature"].as_str().unwrap();
    let short = bs58::encode([7u8; 31]).into_string();
    let mut e = with(
        SDK_SOL,
        "signature",
        Value::String(format!(
            r#"{{"signature": "{sig}", "publicKey": "{short}"}}"#
        )),
    );
    e.sender = Some(short);
    assert_eq!(
        fault(verify(&e)),
        SignatureFault::WrongLength {
            expected: 32,
            got: 31
        }
    );
}

// ---------------------------------------------------------------- item checks

#[test]
fn changed_item_content_is_a_hash_mismatch() {
    for text in [SDK_ETH, SDK_SOL] {
        let original = envelope(&json(text));
        let content = original
            .item_content
            .clone()
            .unwrap()
            .replace("1000000", "2000000");
        let e = with(text, "item_content", Value::String(content.clone()));
        let err = verify(&e).unwrap_err();
        assert_eq!(
            err,
            EnvelopeError::ItemHashMismatch {
                expected: item_hash_of(&content),
                given: original.item_hash.clone(),
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "Invalid message format: 'item_hash' does not match 'sha256(item_content)': \
                 expected {}, got {}",
                item_hash_of(&content),
                original.item_hash
            )
        );
    }
}

#[test]
fn item_hash_compares_exactly_lowercase() {
    let original = envelope(&json(SDK_ETH));
    let e = with(
        SDK_ETH,
        "item_hash",
        Value::String(original.item_hash.to_uppercase()),
    );
    assert!(matches!(
        verify(&e),
        Err(EnvelopeError::ItemHashMismatch { .. })
    ));
}

#[test]
fn only_inline_items() {
    for item_type in ["storage", "ipfs", "INLINE"] {
        let e = with(SDK_ETH, "item_type", Value::String(item_type.into()));
        let err = verify(&e).unwrap_err();
        assert_eq!(err, EnvelopeError::NotInline(item_type.into()));
        assert_eq!(
            err.to_string(),
            format!(
                "Invalid message format: only inline items are supported (item_type is '{item_type}')"
            )
        );
    }
    // item_type absent: inline when item_content is there.
    assert_eq!(verify(&with(SDK_ETH, "item_type", Value::Null)), Ok(()));
    // No item_content.
    for item_type in [Value::Null, Value::String("inline".into())] {
        let mut value = json(SDK_ETH);
        value.as_object_mut().unwrap().remove("item_content");
        if item_type.is_null() {
            value.as_object_mut().unwrap().remove("item_type");
        }
        let err = verify(&envelope(&value)).unwrap_err();
        assert_eq!(err, EnvelopeError::MissingItemContent);
        assert_eq!(
            err.to_string(),
            "Invalid message format: item_content is required (only inline items are supported)"
        );
    }
}

#[test]
fn missing_fields() {
    let cases = [
        (
            "chain",
            EnvelopeError::MissingChain,
            "Invalid message format: field 'chain' is required",
        ),
        (
            "sender",
            EnvelopeError::MissingSender,
            "Invalid message format: field 'sender' is required",
        ),
        (
            "signature",
            EnvelopeError::MissingSignature,
            "The signature of the message is invalid: the message has no signature",
        ),
    ];
    for (field, expected, text) in cases {
        let err = verify(&with(SDK_ETH, field, Value::Null)).unwrap_err();
        assert_eq!(err, expected);
        assert_eq!(err.to_string(), text);
    }
    let err = verify(&with(SDK_SOL, "signature", Value::String(String::new()))).unwrap_err();
    assert_eq!(err, EnvelopeError::MissingSignature);
}

// ---------------------------------------------------------------- chains

#[test]
fn unknown_chains() {
    // Enum names instead of wire values, the enum values pyaleph has no verifier for, casing,
    // and plain nonsense.
    for chain in [
        "FOO", "ARBITRUM", "OPTIMISM", "ECLIPSE", "AURORA", "STT", "eth", "",
    ] {
        let e = with(SDK_ETH, "chain", Value::String(chain.into()));
        let err = verify(&e).unwrap_err();
        assert_eq!(err, EnvelopeError::UnknownChain(chain.into()));
        assert_eq!(
            err.to_string(),
            format!("Unknown chain for validation: {chain}")
        );
        assert_eq!(chain_family(chain), None);
    }
}

#[test]
fn unsupported_chains() {
    for chain in ["AVAX", "NULS", "NULS2", "TEZOS", "DOT", "CSDK"] {
        assert!(UNSUPPORTED_CHAINS.contains(&chain));
        let e = with(SDK_ETH, "chain", Value::String(chain.into()));
        let err = verify(&e).unwrap_err();
        assert_eq!(err, EnvelopeError::UnsupportedChain(chain.into()));
        assert_eq!(
            err.to_string(),
            format!("Unsupported chain for signature verification: {chain}")
        );
    }
}

#[test]
fn chain_tables() {
    let evm = [
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
    for chain in evm {
        assert_eq!(chain_family(chain), Some(ChainFamily::Evm), "{chain}");
    }
    assert_eq!(chain_family("SOL"), Some(ChainFamily::Svm));
    assert_eq!(chain_family("ES"), Some(ChainFamily::Svm));
}

#[test]
fn signature_for_another_chain_is_invalid() {
    // The chain is in the signed buffer: an ETH message relabelled BASE does not verify.
    let e = with(SDK_ETH, "chain", Value::String("BASE".into()));
    assert!(matches!(
        fault(verify(&e)),
        SignatureFault::AddressMismatch { .. }
    ));
    let e = with(SDK_SOL, "chain", Value::String("ES".into()));
    assert_eq!(fault(verify(&e)), SignatureFault::Rejected);
}

// ---------------------------------------------------------------- round trips

fn built(chain: &str, sender: &str, signer: impl Fn(&[u8]) -> String) -> Envelope {
    let item_content = format!(
        r#"{{"address":"{sender}","time":1772330400.0,"type":"aleph_credit_transfer","content":{{"transfer":{{"credits":[]}}}}}}"#
    );
    let item_hash = item_hash_of(&item_content);
    let signature = signer(&verification_buffer(chain, sender, "POST", &item_hash));
    envelope(&serde_json::json!({
        "chain": chain,
        "sender": sender,
        "type": "POST",
        "channel": "ALEPH_CREDIT",
        "item_type": "inline",
        "item_content": item_content,
        "item_hash": item_hash,
        "signature": signature,
    }))
}

#[test]
fn round_trips_through_the_signing_helpers() {
    for seed in 1u8..=8 {
        let secret = [seed; 32];
        for chain in ["ETH", "BASE", "WLD"] {
            let sender = evm_address(&secret);
            let e = built(chain, &sender, |b| sign_evm(&secret, b));
            assert_eq!(verify(&e), Ok(()), "{chain} {seed}");
            let other = built(chain, &sender, |b| sign_evm(&[seed + 100; 32], b));
            assert!(matches!(
                fault(verify(&other)),
                SignatureFault::AddressMismatch { .. }
            ));
        }
        for chain in ["SOL", "ES"] {
            let (_, sender) = sign_sol(&secret, b"");
            let e = built(chain, &sender, |b| sign_sol(&secret, b).0);
            assert_eq!(verify(&e), Ok(()), "{chain} {seed}");
        }
    }
}

#[test]
fn error_source_carries_the_reason() {
    use std::error::Error as _;
    let e = with(SDK_ETH, "signature", Value::String("0x00".into()));
    let err = verify(&e).unwrap_err();
    assert_eq!(err.to_string(), INVALID);
    assert_eq!(
        err.source().map(ToString::to_string),
        Some("the signature has 1 bytes, expected 65".into())
    );
}
