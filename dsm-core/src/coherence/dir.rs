//! [`DirEntry`]: a page's directory entry at its manager, and the layout of its words in the
//! manager's registered directory region.

use super::nodeset::NodeSet;
use super::PageNo;
use crate::Rank;

/// Bytes of directory entry per page at its manager: readers, writers, home + 1, spare.
pub const ENTRY_BYTES: usize = 32;

/// A word of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The nodes that read the page (a node adds itself once, with a fetch-and-add).
    Readers,
    /// The nodes that write the page (likewise).
    Writers,
    /// The home + 1 of a first-touch page (0 until the first node swaps its rank in).
    Home,
}

impl Field {
    /// The byte offset of this word of `page`'s entry in the directory region.
    pub fn offset(self, page: PageNo) -> usize {
        let word = match self {
            Field::Readers => 0,
            Field::Writers => 1,
            Field::Home => 2,
        };
        page.0 * ENTRY_BYTES + word * 8
    }
}

/// The sharing state of a page, as its manager records it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirEntry {
    /// The nodes that ever read the page (not homed at them).
    pub readers: NodeSet,
    /// The nodes that ever wrote it.
    pub writers: NodeSet,
}

impl DirEntry {
    /// Decodes the first two words of an entry (readers, writers), as read from the manager.
    pub fn from_words(readers: u64, writers: u64) -> DirEntry {
        DirEntry {
            readers: NodeSet::from_word(readers),
            writers: NodeSet::from_word(writers),
        }
    }

    /// The bytes of the first two words (readers, writers) read from the manager, little
    /// endian; `None` for a buffer shorter than 16 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<DirEntry> {
        let readers = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
        let writers = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
        Some(DirEntry::from_words(readers, writers))
    }

    /// The home recorded in a first-touch page's home word (`None`: nobody touched it yet).
    pub fn home_of_word(word: u64) -> Option<Rank> {
        word.checked_sub(1)
            .and_then(|h| u32::try_from(h).ok())
            .map(Rank)
    }

    /// The value a node swaps into the home word to become the home.
    pub fn home_word(home: Rank) -> u64 {
        u64::from(home.0) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_codec() {
        assert_eq!(Field::Writers.offset(PageNo(2)), 72);
        assert_eq!(Field::Home.offset(PageNo(0)), 16);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&5u64.to_le_bytes());
        b[8..].copy_from_slice(&2u64.to_le_bytes());
        let e = DirEntry::from_bytes(&b).unwrap();
        assert!(e.readers.contains(Rank(0)) && e.readers.contains(Rank(2)));
        assert!(e.writers.contains(Rank(1)) && e.writers.len() == 1);
        assert_eq!(DirEntry::from_bytes(&b[..15]), None);
        assert_eq!(DirEntry::home_of_word(0), None);
        assert_eq!(
            DirEntry::home_of_word(DirEntry::home_word(Rank(7))),
            Some(Rank(7))
        );
    }
}
