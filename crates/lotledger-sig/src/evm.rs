//! EVM signatures: EIP-191 `personal_sign` over the verification buffer, secp256k1 public-key
//! recovery, address comparison. Mirrors pyaleph's `EVMVerifier` (plain ECDSA path), which
//! relies on eth-account's `Account.recover_message`.

use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use sha3::{Digest, Keccak256};

use crate::SignatureFault;

/// Suffix of an ERC-6492 (counterfactual smart wallet) signature.
const ERC6492_MAGIC: [u8; 32] = [
    0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92,
    0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92,
];

/// keccak256("\x19Ethereum Signed Message:\n" + decimal byte length + message).
pub fn eip191_hash(message: &[u8]) -> [u8; 32] {
    let mut hasher = Keccak256::new();
    hasher.update(b"\x19Ethereum Signed Message:\n");
    hasher.update(message.len().to_string().as_bytes());
    hasher.update(message);
    hasher.finalize().into()
}

/// Lowercase `0x` address of a public key: the last 20 bytes of keccak256 of the uncompressed
/// point without its `0x04` tag.
pub(crate) fn address_of(key: &VerifyingKey) -> String {
    address_of_point(key.to_sec1_point(false).as_bytes())
}

/// [`address_of`] for the 65 bytes of an uncompressed SEC1 point (`0x04 ‖ x ‖ y`).
fn address_of_point(uncompressed: &[u8]) -> String {
    let coordinates = uncompressed.get(1..).unwrap_or_default();
    let digest: [u8; 32] = Keccak256::digest(coordinates).into();
    let (_, address) = digest.split_at(12);
    format!("0x{}", hex::encode(address))
}

/// Hex as eth-account reads it (`HexBytes`): optional `0x`/`0X` prefix, either case, and an
/// odd number of digits left-padded with a zero.
fn decode_hex(text: &str) -> Result<Vec<u8>, SignatureFault> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let nibble = |c: u8| -> Result<u8, SignatureFault> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(SignatureFault::NotHex),
        }
    };
    let bytes = digits.as_bytes();
    let (head, rest) = bytes.split_at(bytes.len() % 2);
    let mut out = Vec::with_capacity(bytes.len().div_ceil(2));
    for &c in head {
        out.push(nibble(c)?);
    }
    for pair in rest.chunks_exact(2) {
        if let [hi, lo] = *pair {
            out.push((nibble(hi)? << 4) | nibble(lo)?);
        }
    }
    Ok(out)
}

/// The y-parity in the recovery byte, as eth-account's `to_standard_v`: 0/1, 27/28, or an
/// EIP-155 value (35 and above, parity of v − 35).
fn parity(v: u8) -> Result<bool, SignatureFault> {
    match v {
        0 | 1 => Ok(v == 1),
        27 | 28 => Ok(v == 28),
        35.. => Ok((v - 35) % 2 == 1),
        _ => Err(SignatureFault::BadRecoveryByte(v)),
    }
}

pub(crate) fn verify(buffer: &[u8], sender: &str, signature: &str) -> Result<(), SignatureFault> {
    let bytes = decode_hex(signature)?;
    if bytes.ends_with(&ERC6492_MAGIC) {
        return Err(SignatureFault::SmartWallet);
    }
    let got = bytes.len();
    let bytes: [u8; 65] = bytes
        .try_into()
        .map_err(|_| SignatureFault::WrongLength { expected: 65, got })?;
    let (rs, v) = bytes.split_at(64);
    let v = v.first().copied().unwrap_or_default();
    let recovered = recover(Recovery::Libsecp256k1, &eip191_hash(buffer), rs, parity(v)?)?;
    if recovered.eq_ignore_ascii_case(sender) {
        Ok(())
    } else {
        Err(SignatureFault::AddressMismatch {
            recovered,
            sender: sender.to_owned(),
        })
    }
}

/// An implementation of secp256k1 public-key recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The pure-Rust `k256` crate.
    K256,
    /// Bitcoin Core's libsecp256k1 (C, through the `secp256k1` crate): the one [`verify`]
    /// uses, about 1.8 times as fast here (BENCHMARKS.md, W5).
    Libsecp256k1,
}

/// libsecp256k1's verification context, built once (its tables take a while to compute).
static SECP256K1: std::sync::LazyLock<secp256k1::Secp256k1<secp256k1::VerifyOnly>> =
    std::sync::LazyLock::new(secp256k1::Secp256k1::verification_only);

/// The lower-case `0x` address whose key signed the 32-byte `prehash` with the 64-byte `r ‖ s`
/// and the y-parity `odd`. Both implementations give the same answer and the same fault on
/// every input: r or s zero or not below the curve order is [`SignatureFault::ScalarOutOfRange`];
/// an r that is no point's x coordinate is [`SignatureFault::RecoveryFailed`]; high-s
/// signatures are accepted, as eth-account does (recovery does not need low s).
pub fn recover(
    implementation: Recovery,
    prehash: &[u8; 32],
    rs: &[u8],
    odd: bool,
) -> Result<String, SignatureFault> {
    match implementation {
        Recovery::K256 => {
            let signature =
                Signature::from_slice(rs).map_err(|_| SignatureFault::ScalarOutOfRange)?;
            let key = VerifyingKey::recover_from_prehash(
                prehash,
                &signature,
                RecoveryId::new(odd, false),
            )
            .map_err(|_| SignatureFault::RecoveryFailed)?;
            Ok(address_of(&key))
        }
        Recovery::Libsecp256k1 => {
            // libsecp256k1 parses a zero r or s and fails only at recovery: refuse it first.
            let (r, s) = rs.split_at(rs.len().min(32));
            if rs.len() != 64 || r.iter().all(|b| *b == 0) || s.iter().all(|b| *b == 0) {
                return Err(SignatureFault::ScalarOutOfRange);
            }
            let id = if odd {
                secp256k1::ecdsa::RecoveryId::One
            } else {
                secp256k1::ecdsa::RecoveryId::Zero
            };
            let signature = secp256k1::ecdsa::RecoverableSignature::from_compact(rs, id)
                .map_err(|_| SignatureFault::ScalarOutOfRange)?;
            let key = SECP256K1
                .recover_ecdsa(secp256k1::Message::from_digest(*prehash), &signature)
                .map_err(|_| SignatureFault::RecoveryFailed)?;
            Ok(address_of_point(&key.serialize_uncompressed()))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hex_like_hexbytes() {
        assert_eq!(decode_hex("0xabCD").unwrap(), vec![0xab, 0xcd]);
        assert_eq!(decode_hex("0XabCD").unwrap(), vec![0xab, 0xcd]);
        assert_eq!(decode_hex("abcd").unwrap(), vec![0xab, 0xcd]);
        assert_eq!(decode_hex("0xbcd").unwrap(), vec![0x0b, 0xcd]);
        assert_eq!(decode_hex("").unwrap(), Vec::<u8>::new());
        assert_eq!(decode_hex("0xzz"), Err(SignatureFault::NotHex));
        assert_eq!(decode_hex(" 0xab"), Err(SignatureFault::NotHex));
        assert_eq!(decode_hex("0xé1"), Err(SignatureFault::NotHex));
    }

    #[test]
    fn recovery_bytes() {
        assert_eq!(parity(0), Ok(false));
        assert_eq!(parity(1), Ok(true));
        assert_eq!(parity(27), Ok(false));
        assert_eq!(parity(28), Ok(true));
        assert_eq!(parity(35), Ok(false));
        assert_eq!(parity(38), Ok(true));
        assert_eq!(parity(2), Err(SignatureFault::BadRecoveryByte(2)));
        assert_eq!(parity(34), Err(SignatureFault::BadRecoveryByte(34)));
    }

    /// The two recovery implementations agree, on signatures of many keys and messages, with
    /// either s (low and its high twin), and on every malformed kind of r and s.
    #[test]
    fn both_recoveries_agree() {
        use k256::elliptic_curve::ops::Reduce;
        let order_minus = |s: &[u8]| -> Vec<u8> {
            // n − s, the high twin of a low s (same signature for recovery, other parity).
            let s = k256::Scalar::reduce(&k256::U256::from_be_slice(s));
            (-s).to_bytes().to_vec()
        };
        for i in 1u8..=40 {
            let secret = [i; 32];
            let buffer = [b'm', i];
            let signature = crate::sign_evm(&secret, &buffer);
            let bytes = decode_hex(&signature).unwrap();
            let (rs, v) = bytes.split_at(64);
            let odd = v[0] == 28;
            let prehash = eip191_hash(&buffer);
            let want = recover(Recovery::K256, &prehash, rs, odd).unwrap();
            assert_eq!(
                recover(Recovery::Libsecp256k1, &prehash, rs, odd),
                Ok(want.clone())
            );
            // High s with the other parity: the same key, by both.
            let mut high = rs[..32].to_vec();
            high.extend(order_minus(&rs[32..]));
            assert_eq!(
                recover(Recovery::K256, &prehash, &high, !odd),
                Ok(want.clone())
            );
            assert_eq!(
                recover(Recovery::Libsecp256k1, &prehash, &high, !odd),
                Ok(want)
            );
            // Wrong parity: another key (or none), the same for both.
            assert_eq!(
                recover(Recovery::K256, &prehash, rs, !odd),
                recover(Recovery::Libsecp256k1, &prehash, rs, !odd)
            );
        }
        let n = hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
            .unwrap();
        let one = {
            let mut b = vec![0u8; 31];
            b.push(1);
            b
        };
        let zero = vec![0u8; 32];
        // An x coordinate with no point on the curve (x = 5: 5³ + 7 = 132 is not a square).
        let mut no_point = vec![0u8; 31];
        no_point.push(5);
        let cases: [(Vec<u8>, Vec<u8>); 6] = [
            (zero.clone(), one.clone()),
            (one.clone(), zero),
            (n.clone(), one.clone()),
            (one.clone(), n),
            (vec![0xff; 32], one.clone()),
            (no_point, one),
        ];
        for (r, s) in cases {
            let rs = [r, s].concat();
            for odd in [false, true] {
                let k = recover(Recovery::K256, &[7; 32], &rs, odd);
                assert!(k.is_err(), "{rs:02x?}");
                assert_eq!(
                    k,
                    recover(Recovery::Libsecp256k1, &[7; 32], &rs, odd),
                    "{rs:02x?}"
                );
            }
        }
    }

    #[test]
    fn eip191_of_hello() {
        // eth_account: _hash_eip191_message(encode_defunct(text="hello"))
        assert_eq!(
            hex::encode(eip191_hash(b"hello")),
            "50b2c43fd39106bafbba0da34fc430e1f91e3c96ea2acee2bc34119f92b37750"
        );
    }
}
