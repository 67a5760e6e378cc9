//! Tri-state bitmaps: a register value in which each bit is `0` (clear), `1` (set) or `x` (the
//! host's bit), the way CPU templates say "this bit, and leave the rest alone".
//!
//! The text form is Firecracker's, so templates move between the two tools unchanged: `"0b"`
//! followed by up to `width` characters `0`, `1` or `x`, most significant bit first, `_` as a
//! separator anywhere after the prefix. A shorter bitmap is padded on the left with `x` (the high
//! bits stay the host's). An error names the character and its position, counted in the text as
//! written.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A register's bits, each fixed to 0 or 1 or left as the host's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TriState {
    /// The register's width in bits (32 for CPUID, 64 for arm64 registers).
    pub width: u8,
    /// The bits the bitmap fixes (a 1 here is a `0` or `1` in the text; a 0 is an `x`).
    pub mask: u64,
    /// The fixed bits' values (only the bits of `mask` are ever set).
    pub value: u64,
}

/// Why a text is not a tri-state bitmap.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TriStateError {
    /// The text does not start with `0b`.
    #[error("`{text}` is not a bitmap: a bitmap starts with \"0b\" (then 0, 1 or x per bit)")]
    NoPrefix {
        /// The text as written.
        text: String,
    },
    /// A character other than `0`, `1`, `x` or `_`.
    #[error(
        "`{text}`: character {position} is `{found}`; a bitmap holds only 0 (clear), 1 (set), \
         x (the host's bit) and _"
    )]
    BadCharacter {
        /// The text as written.
        text: String,
        /// 1-based position of the character in the text.
        position: usize,
        /// The character.
        found: char,
    },
    /// More bits than the register has.
    #[error("`{text}` has {bits} bits; the register has {width}")]
    TooLong {
        /// The text as written.
        text: String,
        /// Bits in the text.
        bits: usize,
        /// The register's width.
        width: u8,
    },
}

impl TriState {
    /// Every bit fixed: the whole register is `value`.
    pub fn whole(width: u8, value: u64) -> TriState {
        let all = Self::all_bits(width);
        TriState {
            width,
            mask: all,
            value: value & all,
        }
    }

    /// No bit fixed: the host's register as it is.
    pub fn host(width: u8) -> TriState {
        TriState {
            width,
            mask: 0,
            value: 0,
        }
    }

    /// The mask of a register of `width` bits.
    pub fn all_bits(width: u8) -> u64 {
        if width >= 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        }
    }

    /// Whether every bit is fixed.
    pub fn is_whole(&self) -> bool {
        self.mask == Self::all_bits(self.width)
    }

    /// Whether no bit is fixed.
    pub fn is_host(&self) -> bool {
        self.mask == 0
    }

    /// The register this bitmap makes of the host's `host` value.
    pub fn apply(&self, host: u64) -> u64 {
        (host & !self.mask | self.value) & Self::all_bits(self.width)
    }

    /// Fix bit `bit` to `on`.
    pub fn set_bit(&mut self, bit: u32, on: bool) {
        let m = 1u64 << bit;
        self.mask |= m;
        if on {
            self.value |= m;
        } else {
            self.value &= !m;
        }
    }

    /// The bit's state: `Some(true)` set, `Some(false)` clear, `None` the host's.
    pub fn bit(&self, bit: u32) -> Option<bool> {
        let m = 1u64 << bit;
        (self.mask & m != 0).then_some(self.value & m != 0)
    }

    /// Read a bitmap of a `width`-bit register (see the module's text form).
    pub fn parse(text: &str, width: u8) -> Result<TriState, TriStateError> {
        let body = text
            .strip_prefix("0b")
            .or_else(|| text.strip_prefix("0B"))
            .ok_or_else(|| TriStateError::NoPrefix {
                text: text.to_string(),
            })?;
        let mut bits: Vec<Option<bool>> = Vec::with_capacity(body.len());
        for (offset, found) in body.chars().enumerate() {
            match found {
                '0' => bits.push(Some(false)),
                '1' => bits.push(Some(true)),
                'x' | 'X' => bits.push(None),
                '_' => {}
                _ => {
                    return Err(TriStateError::BadCharacter {
                        text: text.to_string(),
                        position: offset + 3,
                        found,
                    });
                }
            }
        }
        if bits.len() > usize::from(width) {
            return Err(TriStateError::TooLong {
                text: text.to_string(),
                bits: bits.len(),
                width,
            });
        }
        let mut out = TriState::host(width);
        for (i, state) in bits.iter().rev().enumerate() {
            if let Some(on) = state {
                out.set_bit(i as u32, *on);
            }
        }
        Ok(out)
    }
}

impl fmt::Display for TriState {
    /// `0b` and one character per bit, most significant first (Firecracker's form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0b")?;
        for bit in (0..u32::from(self.width)).rev() {
            f.write_str(match self.bit(bit) {
                Some(true) => "1",
                Some(false) => "0",
                None => "x",
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bitmap_reads_and_prints_back() {
        let text = format!("0b{}10x", "x".repeat(29));
        let bits = TriState::parse(&text, 32).unwrap();
        assert_eq!(bits.mask, 0b110);
        assert_eq!(bits.value, 0b100);
        assert_eq!(bits.to_string(), text);
        assert_eq!(bits.apply(0xffff_ffff), 0xffff_fffd);
        assert_eq!(bits.apply(0), 0b100);
        assert_eq!(bits.bit(2), Some(true));
        assert_eq!(bits.bit(1), Some(false));
        assert_eq!(bits.bit(0), None);
    }

    #[test]
    fn short_bitmaps_keep_the_high_bits_and_underscores_separate() {
        let bits = TriState::parse("0b1_0", 64).unwrap();
        assert_eq!((bits.mask, bits.value), (0b11, 0b10));
        assert_eq!(bits.apply(u64::MAX), u64::MAX - 1);
        let whole = TriState::whole(64, 0x1234);
        assert!(whole.is_whole());
        assert_eq!(TriState::parse(&whole.to_string(), 64).unwrap(), whole);
        assert!(TriState::host(32).is_host());
    }

    #[test]
    fn errors_name_the_character_and_its_place() {
        let e = TriState::parse("0b01z1", 32).unwrap_err().to_string();
        assert!(e.contains("character 5 is `z`"), "{e}");
        let e = TriState::parse("0x01", 32).unwrap_err().to_string();
        assert!(e.contains("starts with \"0b\""), "{e}");
        let e = TriState::parse(&format!("0b{}", "1".repeat(33)), 32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("33 bits; the register has 32"), "{e}");
    }
}
