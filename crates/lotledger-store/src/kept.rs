//! A kept message's `item_content` as stored (`message_envelopes.item_content`, migration
//! 0010): one tag byte, then
//! - [`PLAIN`]: the text's UTF-8 bytes;
//! - [`ZSTD_V1`]: a zstd frame of the text, compressed with [`DICTIONARY_V1`] as raw content.
//!
//! Credit posts are small JSON texts that share their keys and structure, which a dictionary
//! of those shapes lets zstd take from it; on its own a few hundred bytes of JSON barely
//! compress. A text is stored compressed only when that is smaller. The dictionary is part of
//! the stored format: a changed dictionary needs a new tag, and [`unpack`] keeps reading every
//! tag it ever wrote.

use std::cell::RefCell;
use std::sync::OnceLock;

use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use crate::StoreError;

/// Tag of a text kept as its UTF-8 bytes.
pub const PLAIN: u8 = 0;
/// Tag of a text compressed with [`DICTIONARY_V1`].
pub const ZSTD_V1: u8 = 1;

/// The shapes of credit posts as clients write them (compact and with Python's default
/// spacing), most common last (zstd reaches the end of a dictionary most cheaply).
pub const DICTIONARY_V1: &[u8] = include_bytes!("content_dictionary.txt");

/// zstd's level for kept contents. On a 476-byte expense with random hex values (on the
/// bench machine), level 3 takes ~2.5 µs and keeps ~105 bytes; level 6 ~7.5 µs for ~100.
const LEVEL: i32 = 3;

/// The largest text [`unpack`] restores (a frame claiming more is corrupt): far above any
/// message a node takes.
const MAX_TEXT_BYTES: u64 = 64 << 20;

fn encoder_dictionary() -> &'static EncoderDictionary<'static> {
    static DICTIONARY: OnceLock<EncoderDictionary<'static>> = OnceLock::new();
    DICTIONARY.get_or_init(|| EncoderDictionary::copy(DICTIONARY_V1, LEVEL))
}

fn decoder_dictionary() -> &'static DecoderDictionary<'static> {
    static DICTIONARY: OnceLock<DecoderDictionary<'static>> = OnceLock::new();
    DICTIONARY.get_or_init(|| DecoderDictionary::copy(DICTIONARY_V1))
}

thread_local! {
    /// One compression context per thread, reused (a context is far larger than a text).
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// The stored form of `text`: compressed when that is smaller, else plain.
pub fn pack(text: &str) -> Vec<u8> {
    let compressed = COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Compressor::with_prepared_dictionary(encoder_dictionary()).ok();
        }
        cell.as_mut()?.compress(text.as_bytes()).ok()
    });
    match compressed {
        Some(frame) if frame.len() < text.len() => {
            let mut out = Vec::with_capacity(frame.len() + 1);
            out.push(ZSTD_V1);
            out.extend_from_slice(&frame);
            out
        }
        _ => {
            let mut out = Vec::with_capacity(text.len() + 1);
            out.push(PLAIN);
            out.extend_from_slice(text.as_bytes());
            out
        }
    }
}

/// The text of a stored form ([`pack`]).
pub fn unpack(stored: &[u8]) -> Result<String, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(format!("kept item_content: {what}"));
    let bytes = match stored.split_first() {
        Some((&PLAIN, text)) => text.to_vec(),
        Some((&ZSTD_V1, frame)) => {
            let size = zstd::zstd_safe::get_frame_content_size(frame)
                .ok()
                .flatten()
                .filter(|&n| n <= MAX_TEXT_BYTES)
                .ok_or_else(|| corrupt("a frame without a plausible size".into()))?;
            let capacity = usize::try_from(size).map_err(|e| corrupt(e.to_string()))?;
            DECOMPRESSOR.with(|cell| {
                let mut cell = cell.borrow_mut();
                if cell.is_none() {
                    *cell = Some(
                        Decompressor::with_prepared_dictionary(decoder_dictionary())
                            .map_err(|e| corrupt(e.to_string()))?,
                    );
                }
                match cell.as_mut() {
                    Some(d) => d
                        .decompress(frame, capacity)
                        .map_err(|e| corrupt(e.to_string())),
                    None => Err(corrupt("no decompressor".into())),
                }
            })?
        }
        Some((tag, _)) => return Err(corrupt(format!("unknown tag {tag}"))),
        None => return Err(corrupt("empty".into())),
    };
    String::from_utf8(bytes).map_err(|e| corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

    use super::*;

    /// A credit post as a client writes it (NODE-API.md A.1's distribution, another address).
    const DISTRIBUTION: &str = r#"{"address":"0xeD1F7463E805f8E7c477cE9bAB9805F75eB658E3","time":1795990000.123456,"type":"aleph_credit_distribution","content":{"distribution":{"credits":[{"address":"0x2C49567b5070Ab819f1fa4226630f10Db520B1f9","amount":5000000,"price":"0.000001","tx_hash":"0xabababababababababababababababababababababababababababababababab","provider":"ALEPH","expiration":1830000000000,"origin":"stripe","ref":"commande-n°1234","payment_method":"card","bonus_amount":1000000}],"token":"USDC","chain":"ETH"}}}"#;

    #[test]
    fn every_text_comes_back_as_it_was() {
        for text in [
            "",
            "x",
            "{}",
            DISTRIBUTION,
            &DISTRIBUTION.replace(',', ", "),
            "not json at all \u{1F600} \u{0}",
            &"a".repeat(100_000),
        ] {
            let stored = pack(text);
            assert_eq!(unpack(&stored).unwrap(), text);
            assert!(stored.len() <= text.len() + 1);
        }
    }

    #[test]
    fn credit_posts_are_kept_compressed_and_short() {
        let stored = pack(DISTRIBUTION);
        assert_eq!(stored[0], ZSTD_V1);
        // The hex values (an address, a transaction hash) stay, at about 4 bits a digit;
        // the keys come from the dictionary.
        assert!(
            stored.len() * 2 < DISTRIBUTION.len(),
            "{} of {}",
            stored.len(),
            DISTRIBUTION.len()
        );
        let tiny = pack("x");
        assert_eq!(tiny, vec![PLAIN, b'x']);
    }

    #[test]
    fn corrupt_forms_are_errors() {
        for stored in [
            &[][..],
            &[7, 1, 2][..],
            &[ZSTD_V1, 1, 2, 3][..],
            &[PLAIN, 0xff][..],
        ] {
            assert!(
                matches!(unpack(stored), Err(StoreError::Corrupt(_))),
                "{stored:?}"
            );
        }
    }
}
