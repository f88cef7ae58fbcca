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
pub(crate) fn eip191_hash(message: &[u8]) -> [u8; 32] {
    let mut hasher = Keccak256::new();
    hasher.update(b"\x19Ethereum Signed Message:\n");
    hasher.update(message.len().to_string().as_bytes());
    hasher.update(message);
    hasher.finalize().into()
}

/// Lowercase `0x` address of a public key: the last 20 bytes of keccak256 of the uncompressed
/// point without its `0x04` tag.
pub(crate) fn address_of(key: &VerifyingKey) -> String {
    let point = key.to_sec1_point(false);
    let coordinates = point.as_bytes().get(1..).unwrap_or_default();
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
    let recovery_id = RecoveryId::new(parity(v)?, false);
    // High-s signatures are accepted, as eth-account does; recovery does not need low s.
    let signature = Signature::from_slice(rs).map_err(|_| SignatureFault::ScalarOutOfRange)?;
    let key = VerifyingKey::recover_from_prehash(&eip191_hash(buffer), &signature, recovery_id)
        .map_err(|_| SignatureFault::RecoveryFailed)?;
    let recovered = address_of(&key);
    if recovered.eq_ignore_ascii_case(sender) {
        Ok(())
    } else {
        Err(SignatureFault::AddressMismatch {
            recovered,
            sender: sender.to_owned(),
        })
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

    #[test]
    fn eip191_of_hello() {
        // eth_account: _hash_eip191_message(encode_defunct(text="hello"))
        assert_eq!(
            hex::encode(eip191_hash(b"hello")),
            "50b2c43fd39106bafbba0da34fc430e1f91e3c96ea2acee2bc34119f92b37750"
        );
    }
}
