//! Netlink attribute encoding (a small append-only writer) and lenient decoding on top of
//! `netlink-packet-core`'s checked `NlasIterator`.

use netlink_packet_core::{NLA_ALIGNTO, NLA_HEADER_SIZE, NlasIterator};

/// Counters of malformed input seen while decoding; decoding drops what it cannot read
/// instead of failing the whole reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeReport {
    /// Attributes with a bad header, bad length or unparsable value.
    pub bad_attrs: u64,
    /// Whole entries (services, destinations, daemons) dropped because a key field was missing.
    pub dropped_entries: u64,
}

impl DecodeReport {
    pub fn merge(&mut self, other: DecodeReport) {
        self.bad_attrs += other.bad_attrs;
        self.dropped_entries += other.dropped_entries;
    }
}

const fn align(len: usize) -> usize {
    (len + NLA_ALIGNTO - 1) & !(NLA_ALIGNTO - 1)
}

/// Appends attributes to a byte buffer. Nests are patched in place when closed.
pub(crate) struct AttrWriter<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> AttrWriter<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Self {
        AttrWriter { buf }
    }

    pub(crate) fn put(&mut self, kind: u16, value: &[u8]) {
        // Attribute values we emit are tiny (at most an interface name), far below u16::MAX.
        let len = (NLA_HEADER_SIZE + value.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        let padded = align(self.buf.len());
        self.buf.resize(padded, 0);
    }

    pub(crate) fn put_u8(&mut self, kind: u16, v: u8) {
        self.put(kind, &[v]);
    }

    pub(crate) fn put_u16(&mut self, kind: u16, v: u16) {
        self.put(kind, &v.to_ne_bytes());
    }

    pub(crate) fn put_be16(&mut self, kind: u16, v: u16) {
        self.put(kind, &v.to_be_bytes());
    }

    pub(crate) fn put_u32(&mut self, kind: u16, v: u32) {
        self.put(kind, &v.to_ne_bytes());
    }

    /// NUL-terminated string, as the kernel's `NLA_NUL_STRING` policy requires.
    pub(crate) fn put_str(&mut self, kind: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.put(kind, &v);
    }

    /// Opens a nested attribute; returns its start offset for [`AttrWriter::end_nest`].
    pub(crate) fn begin_nest(&mut self, kind: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        start
    }

    pub(crate) fn end_nest(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        if let Some(slot) = self.buf.get_mut(start..start + 2) {
            slot.copy_from_slice(&len.to_ne_bytes());
        }
    }
}

/// Attributes of one level indexed by type (types above `N - 1` are ignored: newer kernels
/// may add attributes we do not know yet).
pub(crate) struct AttrTable<'a, const N: usize> {
    slots: [Option<&'a [u8]>; N],
}

impl<'a, const N: usize> AttrTable<'a, N> {
    pub(crate) fn parse(buf: &'a [u8], report: &mut DecodeReport) -> Self {
        let mut slots = [None; N];
        for nla in NlasIterator::new(buf) {
            match nla {
                Ok(nla) => {
                    let kind = usize::from(nla.kind());
                    let value = nla_value(nla);
                    if let Some(slot) = slots.get_mut(kind) {
                        *slot = Some(value);
                    }
                }
                Err(_) => report.bad_attrs += 1,
            }
        }
        AttrTable { slots }
    }

    pub(crate) fn get(&self, kind: u16) -> Option<&'a [u8]> {
        self.slots.get(usize::from(kind)).copied().flatten()
    }

    /// Fixed-size value; a wrong length counts as a bad attribute and reads as absent.
    pub(crate) fn array<const M: usize>(
        &self,
        kind: u16,
        report: &mut DecodeReport,
    ) -> Option<[u8; M]> {
        let v = self.get(kind)?;
        match <[u8; M]>::try_from(v) {
            Ok(a) => Some(a),
            Err(_) => {
                report.bad_attrs += 1;
                None
            }
        }
    }

    pub(crate) fn u8(&self, kind: u16, r: &mut DecodeReport) -> Option<u8> {
        self.array::<1>(kind, r).map(|[b]| b)
    }

    pub(crate) fn u16(&self, kind: u16, r: &mut DecodeReport) -> Option<u16> {
        self.array(kind, r).map(u16::from_ne_bytes)
    }

    pub(crate) fn be16(&self, kind: u16, r: &mut DecodeReport) -> Option<u16> {
        self.array(kind, r).map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&self, kind: u16, r: &mut DecodeReport) -> Option<u32> {
        self.array(kind, r).map(u32::from_ne_bytes)
    }

    pub(crate) fn u64(&self, kind: u16, r: &mut DecodeReport) -> Option<u64> {
        self.array(kind, r).map(u64::from_ne_bytes)
    }

    /// NUL-terminated (or unterminated) UTF-8 string.
    pub(crate) fn string(&self, kind: u16, r: &mut DecodeReport) -> Option<String> {
        let v = self.get(kind)?;
        let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
        match std::str::from_utf8(v.get(..end).unwrap_or_default()) {
            Ok(s) => Some(s.to_owned()),
            Err(_) => {
                r.bad_attrs += 1;
                None
            }
        }
    }
}

/// The value slice of a checked attribute, borrowed from the original buffer.
fn nla_value(nla: netlink_packet_core::NlaBuffer<&[u8]>) -> &[u8] {
    let len = usize::from(nla.length());
    nla.into_inner()
        .get(NLA_HEADER_SIZE..len)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_pads_and_nests() {
        let mut buf = Vec::new();
        let mut w = AttrWriter::new(&mut buf);
        let n = w.begin_nest(1);
        w.put_u8(2, 7);
        w.put_str(3, "wlc");
        w.end_nest(n);
        assert_eq!(buf.len() % 4, 0);
        let mut r = DecodeReport::default();
        let outer: AttrTable<'_, 4> = AttrTable::parse(&buf, &mut r);
        let inner_buf = outer.get(1).unwrap_or_default();
        let inner: AttrTable<'_, 4> = AttrTable::parse(inner_buf, &mut r);
        assert_eq!(inner.u8(2, &mut r), Some(7));
        assert_eq!(inner.string(3, &mut r).as_deref(), Some("wlc"));
        assert_eq!(r, DecodeReport::default());
    }

    #[test]
    fn wrong_length_counts_as_bad() {
        let mut buf = Vec::new();
        AttrWriter::new(&mut buf).put(1, &[1, 2, 3]);
        let mut r = DecodeReport::default();
        let t: AttrTable<'_, 2> = AttrTable::parse(&buf, &mut r);
        assert_eq!(t.u32(1, &mut r), None);
        assert_eq!(r.bad_attrs, 1);
    }

    #[test]
    fn truncated_header_counts_as_bad() {
        let mut r = DecodeReport::default();
        let t: AttrTable<'_, 2> = AttrTable::parse(&[8, 0, 1], &mut r);
        assert_eq!(t.get(1), None);
        assert_eq!(r.bad_attrs, 1);
    }
}
