//! The arm64 guest's report words: what a tag says, and the names of the exception vectors and
//! syndromes the guest can report (see [`crate::guests::arm64`] for the protocol).

use std::fmt;

/// The top 16 bits of every tag: a word that does not start with it is not a tag.
pub const TAG_MAGIC: u16 = 0xa641;

/// What a tag announces. The discriminant is the tag's `kind` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TagKind {
    /// A pass begins; 1 value: the pass number.
    PassBegin = 1,
    /// An ID register; detail = its 16-bit encoding; 1 value: what `MRS` read.
    IdReg = 2,
    /// An SMCCC call; detail = its function id; 4 values: x0..x3 after `HVC`.
    Call = 3,
    /// A pass ended; 1 value: the pass number.
    PassEnd = 4,
    /// `PSCI SYSTEM_OFF` returned; 1 value: its x0.
    OffReturned = 5,
    /// An exception was taken; index = the vector (0..16); 3 values: ESR_EL1, ELR_EL1, FAR_EL1.
    Exception = 6,
}

impl TagKind {
    /// How many value words follow a tag of this kind.
    pub const fn values(self) -> usize {
        match self {
            TagKind::Call => 4,
            TagKind::Exception => 3,
            _ => 1,
        }
    }

    fn from_field(field: u64) -> Option<TagKind> {
        Some(match field {
            1 => TagKind::PassBegin,
            2 => TagKind::IdReg,
            3 => TagKind::Call,
            4 => TagKind::PassEnd,
            5 => TagKind::OffReturned,
            6 => TagKind::Exception,
            _ => return None,
        })
    }
}

/// The largest index a tag can carry (12 bits).
pub const MAX_TAG_INDEX: u16 = 0xfff;

/// A tag word: `magic:16 | kind:4 | index:12 | detail:32` (bits 63..48, 47..44, 43..32, 31..0).
///
/// The index is the step's position among the steps of its kind within a pass (or the vector of
/// an exception); the detail names what the step is about (register encoding or function id),
/// so that a decoder can say exactly which step the guest reported when it is not the expected
/// one. Pass numbers are values, not tag fields, which keeps every tag a constant the program
/// can load with immediates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tag {
    /// What the tag announces.
    pub kind: TagKind,
    /// Position within its kind in the pass, or the exception vector; at most [`MAX_TAG_INDEX`].
    pub index: u16,
    /// Register encoding ([`TagKind::IdReg`]), function id ([`TagKind::Call`]), else 0.
    pub detail: u32,
}

impl Tag {
    /// `PASS_BEGIN`.
    pub const PASS_BEGIN: Tag = Tag::new(TagKind::PassBegin, 0, 0);
    /// `PASS_END`.
    pub const PASS_END: Tag = Tag::new(TagKind::PassEnd, 0, 0);
    /// `SYSTEM_OFF` returned.
    pub const OFF_RETURNED: Tag = Tag::new(TagKind::OffReturned, 0, 0);

    const fn new(kind: TagKind, index: u16, detail: u32) -> Tag {
        Tag {
            kind,
            index,
            detail,
        }
    }

    /// The tag of the `index`-th ID register of a pass, whose encoding is `encoding`.
    pub const fn id_reg(index: u16, encoding: u16) -> Tag {
        Tag::new(TagKind::IdReg, index, encoding as u32)
    }

    /// The tag of the `index`-th SMCCC call of a pass.
    pub const fn call(index: u16, function_id: u32) -> Tag {
        Tag::new(TagKind::Call, index, function_id)
    }

    /// The tag of an exception taken through vector `vector` (0..16).
    pub const fn exception(vector: u16) -> Tag {
        Tag::new(TagKind::Exception, vector, 0)
    }

    /// The 64-bit word the guest stores (the index is masked to 12 bits).
    pub const fn encode(self) -> u64 {
        ((TAG_MAGIC as u64) << 48)
            | ((self.kind as u64) << 44)
            | (((self.index & MAX_TAG_INDEX) as u64) << 32)
            | self.detail as u64
    }

    /// The tag a word encodes, if it is one the program can produce: the magic, a known kind,
    /// and index and detail within what that kind uses.
    pub fn decode(word: u64) -> Option<Tag> {
        if (word >> 48) as u16 != TAG_MAGIC {
            return None;
        }
        let kind = TagKind::from_field((word >> 44) & 0xf)?;
        let tag = Tag::new(kind, ((word >> 32) & 0xfff) as u16, word as u32);
        let valid = match kind {
            TagKind::PassBegin | TagKind::PassEnd | TagKind::OffReturned => {
                tag.index == 0 && tag.detail == 0
            }
            TagKind::IdReg => tag.detail <= 0xffff,
            TagKind::Call => true,
            TagKind::Exception => usize::from(tag.index) < VECTORS.len() && tag.detail == 0,
        };
        valid.then_some(tag)
    }
}

/// For error messages: `ID-register step 3 (ID_AA64ISAR0_EL1)`, `PASS_BEGIN`, …
impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TagKind::PassBegin => f.write_str("PASS_BEGIN"),
            TagKind::PassEnd => f.write_str("PASS_END"),
            TagKind::OffReturned => f.write_str("SYSTEM_OFF returned"),
            TagKind::IdReg => {
                let encoding = self.detail as u16;
                let reg = super::SysReg::from_encoding(encoding);
                if super::readable_by_mrs(reg) {
                    write!(f, "ID register #{} ({reg})", self.index)
                } else {
                    write!(f, "ID register #{} (encoding {encoding:#06x})", self.index)
                }
            }
            TagKind::Call => {
                let call = super::smccc::SmcccCall::new(self.detail);
                write!(f, "SMCCC call #{} ({call})", self.index)
            }
            TagKind::Exception => write!(
                f,
                "exception through vector {} ({})",
                self.index,
                vector_name(self.index)
            ),
        }
    }
}

/// The 16 entries of an AArch64 vector table, in order (0x80 bytes each).
pub const VECTORS: [&str; 16] = [
    "current EL with SP_EL0, synchronous",
    "current EL with SP_EL0, IRQ",
    "current EL with SP_EL0, FIQ",
    "current EL with SP_EL0, SError",
    "current EL with SP_ELx, synchronous",
    "current EL with SP_ELx, IRQ",
    "current EL with SP_ELx, FIQ",
    "current EL with SP_ELx, SError",
    "lower EL in AArch64, synchronous",
    "lower EL in AArch64, IRQ",
    "lower EL in AArch64, FIQ",
    "lower EL in AArch64, SError",
    "lower EL in AArch32, synchronous",
    "lower EL in AArch32, IRQ",
    "lower EL in AArch32, FIQ",
    "lower EL in AArch32, SError",
];

/// The name of vector `vector` ("unknown vector" past the table).
pub fn vector_name(vector: u16) -> &'static str {
    VECTORS
        .get(usize::from(vector))
        .copied()
        .unwrap_or("unknown vector")
}

/// What an `ESR_ELx` exception class (bits 31..26) means, for the classes a program that only
/// moves immediates, reads system registers, stores and calls `HVC` can run into.
pub fn exception_class(esr: u64) -> String {
    let class = (esr >> 26) & 0x3f;
    let name = match class {
        0x00 => {
            "unknown reason (an UNDEFINED instruction, e.g. an MRS of a register the CPU does not have)"
        }
        0x01 => "trapped WFI/WFE",
        0x0e => "illegal execution state",
        0x16 => "HVC from AArch64 (the hypervisor made the call UNDEFINED)",
        0x18 => "trapped MSR/MRS/system instruction",
        0x20 | 0x21 => "instruction abort (the program fetched from outside guest memory)",
        0x22 => "PC alignment fault",
        0x24 | 0x25 => "data abort (a report store KVM could not turn into an MMIO exit)",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "other",
    };
    format!("EC {class:#04x}: {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let tags = [
            Tag::PASS_BEGIN,
            Tag::PASS_END,
            Tag::OFF_RETURNED,
            Tag::id_reg(0, 0xc030),
            Tag::id_reg(MAX_TAG_INDEX, 0xffff),
            Tag::call(3, 0x8400_0050),
            Tag::call(0, 0),
            Tag::exception(4),
            Tag::exception(15),
        ];
        for tag in tags {
            assert_eq!(Tag::decode(tag.encode()), Some(tag), "{tag}");
        }
        assert_eq!(Tag::PASS_BEGIN.encode(), 0xa641_1000_0000_0000);
        assert_eq!(Tag::id_reg(2, 0xc030).encode(), 0xa641_2002_0000_c030);
        assert_eq!(Tag::call(1, 0x8400_0050).encode(), 0xa641_3001_8400_0050);
        assert_eq!(Tag::exception(4).encode(), 0xa641_6004_0000_0000);
    }

    #[test]
    fn words_that_are_not_tags() {
        for word in [
            0,
            u64::MAX,
            0xa640_1000_0000_0000, // wrong magic
            0xa641_0000_0000_0000, // kind 0
            0xa641_7000_0000_0000, // kind 7
            0xa641_1001_0000_0000, // PASS_BEGIN with an index
            0xa641_4000_0000_0001, // PASS_END with a detail
            0xa641_2000_0001_0000, // ID register encoding wider than 16 bits
            0xa641_6010_0000_0000, // vector 16
        ] {
            assert_eq!(Tag::decode(word), None, "{word:#x}");
        }
    }

    #[test]
    fn descriptions() {
        assert_eq!(
            Tag::id_reg(3, 0xc030).to_string(),
            "ID register #3 (ID_AA64ISAR0_EL1)"
        );
        assert_eq!(
            Tag::id_reg(0, 0x0001).to_string(),
            "ID register #0 (encoding 0x0001)"
        );
        assert_eq!(
            Tag::call(1, 0x8400_0050).to_string(),
            "SMCCC call #1 (TRNG_VERSION)"
        );
        assert_eq!(
            Tag::exception(4).to_string(),
            "exception through vector 4 (current EL with SP_ELx, synchronous)"
        );
        assert_eq!(vector_name(99), "unknown vector");
        assert!(exception_class(0x0200_0000).starts_with("EC 0x00: unknown reason"));
        assert!(exception_class(0x9600_0050).starts_with("EC 0x25: data abort"));
        assert_eq!(exception_class(0x3f << 26), "EC 0x3f: other");
    }
}
