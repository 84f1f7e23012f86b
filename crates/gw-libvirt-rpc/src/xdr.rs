//! XDR (RFC 4506) primitives, as libvirt's rpcgen output uses them.
//!
//! Hand-written rather than taken from a crate: the XDR crates on crates.io
//! (`xdr-codec`, `serde-xdr`, ...) are unmaintained or serde-shaped, and what
//! we need is tiny but specific: every variable-length item carries its own
//! maximum from the `.x` file, and decoding must never allocate more than the
//! bytes actually present in the message. A few hundred lines we own do that
//! more plainly than adapting a dependency.
//!
//! Padding bytes are not checked for zero on decode, as glibc's XDR (which
//! libvirt uses) does not check them either; we always write zeros.

use thiserror::Error;

/// Why a body failed to decode. Never fatal to a connection: the session
/// turns it into a libvirt error reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum XdrError {
    /// The item needs more bytes than remain in the message.
    #[error("truncated: need {need} bytes, {have} remain")]
    Truncated {
        /// Bytes the item needs.
        need: usize,
        /// Bytes left in the message.
        have: usize,
    },
    /// A length or count beyond the protocol's maximum for that item.
    #[error("length {len} exceeds maximum {max}")]
    TooLong {
        /// Length read from the wire.
        len: usize,
        /// The `.x` file's maximum.
        max: usize,
    },
    /// A boolean other than 0 or 1.
    #[error("invalid boolean {0}")]
    BadBool(u32),
    /// A string that is not UTF-8 (names and XML documents must be).
    #[error("string is not valid UTF-8")]
    BadUtf8,
    /// An enum discriminant the protocol does not define.
    #[error("invalid enum value {0}")]
    BadEnum(i32),
}

/// Reads XDR items from a borrowed message body.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over the whole of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes exactly `n` bytes, or fails without moving.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        let have = self.remaining();
        if n > have {
            return Err(XdrError::Truncated { need: n, have });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn word(&mut self) -> Result<[u8; 4], XdrError> {
        let b = self.take(4)?;
        Ok([b[0], b[1], b[2], b[3]])
    }

    /// Reads `n` bytes of opaque data followed by padding to a multiple of 4.
    pub fn padded(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        // Check data and padding together so a short message fails before
        // we hand out a slice.
        let padded = n.checked_add(pad_len(n)).ok_or(XdrError::TooLong { len: n, max: usize::MAX })?;
        let have = self.remaining();
        if padded > have {
            return Err(XdrError::Truncated { need: padded, have });
        }
        let data = self.take(n)?;
        self.take(pad_len(n))?;
        Ok(data)
    }

    /// Reads a length prefix and checks it against `max` and against the
    /// bytes left (each counted item occupying at least `min_item` bytes), so
    /// a hostile count can never make us allocate beyond the message.
    pub fn length(&mut self, max: usize, min_item: usize) -> Result<usize, XdrError> {
        let len = u32::decode(self)? as usize;
        if len > max {
            return Err(XdrError::TooLong { len, max });
        }
        let need = len.saturating_mul(min_item);
        let have = self.remaining();
        if need > have {
            return Err(XdrError::Truncated { need, have });
        }
        Ok(len)
    }
}

/// Bytes of padding after `n` bytes of opaque data.
pub fn pad_len(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Accumulates an encoded body.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }

    /// Appends raw bytes (already XDR).
    pub fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// Appends opaque data and its zero padding.
    pub fn padded(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        self.buf.extend_from_slice(&[0u8; 3][..pad_len(b.len())]);
    }

    /// Appends a length prefix. Lengths beyond u32 cannot be produced by
    /// anything this crate encodes (the protocol's maxima are far lower),
    /// so saturating is only a guard, never a silent truncation in practice.
    pub fn length(&mut self, n: usize) {
        u32::try_from(n).unwrap_or(u32::MAX).encode(self);
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// An XDR-encodable value.
pub trait Encode {
    /// Appends the value's encoding.
    fn encode(&self, w: &mut Writer);
}

/// An XDR-decodable value.
pub trait Decode: Sized {
    /// The fewest bytes any encoding of this type takes; used to bound
    /// array counts by the bytes left before allocating.
    const MIN_SIZE: usize = 4;
    /// Reads one value.
    fn decode(r: &mut Reader<'_>) -> Result<Self, XdrError>;
}

/// Encodes one value into a fresh body.
pub fn to_bytes<T: Encode + ?Sized>(v: &T) -> Vec<u8> {
    let mut w = Writer::new();
    v.encode(&mut w);
    w.into_bytes()
}

/// Decodes one value from the start of `buf`. Trailing bytes are ignored,
/// as libvirt's decoder ignores them.
pub fn from_bytes<T: Decode>(buf: &[u8]) -> Result<T, XdrError> {
    T::decode(&mut Reader::new(buf))
}

macro_rules! word_int {
    ($t:ty, $n:expr) => {
        impl Encode for $t {
            fn encode(&self, w: &mut Writer) {
                w.raw(&self.to_be_bytes());
            }
        }
        impl Decode for $t {
            const MIN_SIZE: usize = $n;
            fn decode(r: &mut Reader<'_>) -> Result<Self, XdrError> {
                let b = r.take($n)?;
                let mut a = [0u8; $n];
                a.copy_from_slice(b);
                Ok(<$t>::from_be_bytes(a))
            }
        }
    };
}
word_int!(u32, 4);
word_int!(i32, 4);
word_int!(u64, 8);
word_int!(i64, 8);

impl Encode for bool {
    fn encode(&self, w: &mut Writer) {
        u32::from(*self).encode(w);
    }
}

impl Decode for bool {
    fn decode(r: &mut Reader<'_>) -> Result<Self, XdrError> {
        match u32::from_be_bytes(r.word()?) {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(XdrError::BadBool(v)),
        }
    }
}

/// XDR `void`: encodes to nothing.
impl Encode for () {
    fn encode(&self, _w: &mut Writer) {}
}

impl Decode for () {
    const MIN_SIZE: usize = 0;
    fn decode(_r: &mut Reader<'_>) -> Result<Self, XdrError> {
        Ok(())
    }
}

/// Fixed-length opaque data (`opaque x[N]`), e.g. `remote_uuid`.
impl<const N: usize> Encode for [u8; N] {
    fn encode(&self, w: &mut Writer) {
        w.padded(self);
    }
}

impl<const N: usize> Decode for [u8; N] {
    const MIN_SIZE: usize = N + (4 - N % 4) % 4;
    fn decode(r: &mut Reader<'_>) -> Result<Self, XdrError> {
        let b = r.padded(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }
}

/// Variable-length opaque data with a maximum (`opaque x<MAX>`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Opaque<const MAX: usize>(pub Vec<u8>);

impl<const MAX: usize> Encode for Opaque<MAX> {
    fn encode(&self, w: &mut Writer) {
        w.length(self.0.len());
        w.padded(&self.0);
    }
}

impl<const MAX: usize> Decode for Opaque<MAX> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, XdrError> {
        let n = r.length(MAX, 1)?;
        Ok(Opaque(r.padded(n)?.to_vec()))
    }
}

/// A string with a maximum (`string x<MAX>`), required to be UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub struct XdrString<const MAX: usize>(pub String);

impl<const MAX: usize> Encode for XdrString<MAX> {
    fn encode(&self, w: &mut Writer) {
        self.0.as_str().encode(w);
    }
}

impl<const MAX: usize> Decode for XdrString<MAX> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, XdrError> {
        let n = r.length(MAX, 1)?;
        let b = r.padded(n)?;
        let s = std::str::from_utf8(b).map_err(|_| XdrError::BadUtf8)?;
        Ok(XdrString(s.to_owned()))
    }
}

/// Encoding a borrowed string lets replies avoid copying backend data.
impl Encode for str {
    fn encode(&self, w: &mut Writer) {
        w.length(self.len());
        w.padded(self.as_bytes());
    }
}

/// libvirt's `REMOTE_STRING_MAX` (and `VIR_NET_MESSAGE_STRING_MAX`).
pub const REMOTE_STRING_MAX: usize = 4_194_304;

/// `remote_nonnull_string`.
pub type NonnullString = XdrString<REMOTE_STRING_MAX>;

/// `remote_string`: an optional (pointer) `remote_nonnull_string`.
pub type RemoteString = Option<NonnullString>;

/// `remote_uuid`: 16 opaque bytes.
pub type Uuid = [u8; 16];

/// Optional data (`T *x`): a boolean then, if true, the value.
impl<T: Encode> Encode for Option<T> {
    fn encode(&self, w: &mut Writer) {
        match self {
            None => false.encode(w),
            Some(v) => {
                true.encode(w);
                v.encode(w);
            }
        }
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, XdrError> {
        if bool::decode(r)? {
            Ok(Some(T::decode(r)?))
        } else {
            Ok(None)
        }
    }
}

/// A variable-length array with a maximum (`T x<MAX>`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VarArray<T, const MAX: usize>(pub Vec<T>);

impl<T: Encode, const MAX: usize> Encode for VarArray<T, MAX> {
    fn encode(&self, w: &mut Writer) {
        w.length(self.0.len());
        for v in &self.0 {
            v.encode(w);
        }
    }
}

impl<T: Decode, const MAX: usize> Decode for VarArray<T, MAX> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, XdrError> {
        // An item type of size 0 cannot be bounded by the bytes left, so
        // only the declared maximum bounds it (the `.x` files have none).
        let n = r.length(MAX, T::MIN_SIZE)?;
        let cap = if T::MIN_SIZE == 0 { n.min(r.remaining()) } else { n };
        let mut v = Vec::with_capacity(cap);
        for _ in 0..n {
            v.push(T::decode(r)?);
        }
        Ok(VarArray(v))
    }
}

/// A fixed-length array of non-byte items (`T x[N]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedArray<T, const N: usize>(pub [T; N]);

impl<T: Encode, const N: usize> Encode for FixedArray<T, N> {
    fn encode(&self, w: &mut Writer) {
        for v in &self.0 {
            v.encode(w);
        }
    }
}

impl<T: Decode, const N: usize> Decode for FixedArray<T, N> {
    const MIN_SIZE: usize = T::MIN_SIZE * N;
    fn decode(r: &mut Reader<'_>) -> Result<Self, XdrError> {
        let need = T::MIN_SIZE.saturating_mul(N);
        if need > r.remaining() {
            return Err(XdrError::Truncated { need, have: r.remaining() });
        }
        let mut v = Vec::with_capacity(N);
        for _ in 0..N {
            v.push(T::decode(r)?);
        }
        match <[T; N]>::try_from(v) {
            Ok(a) => Ok(FixedArray(a)),
            // Unreachable: exactly N items were pushed above.
            Err(_) => Err(XdrError::Truncated { need, have: 0 }),
        }
    }
}

/// Declares a struct whose XDR form is its fields in order, as rpcgen does.
#[macro_export]
macro_rules! xdr_struct {
    ($(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $f:ident : $t:ty ),* $(,)? }) => {
        $(#[$m])*
        pub struct $name { $( $(#[$fm])* pub $f: $t ),* }
        impl $crate::xdr::Encode for $name {
            fn encode(&self, _w: &mut $crate::xdr::Writer) {
                $( $crate::xdr::Encode::encode(&self.$f, _w); )*
            }
        }
        impl $crate::xdr::Decode for $name {
            fn decode(_r: &mut $crate::xdr::Reader<'_>) -> Result<Self, $crate::xdr::XdrError> {
                // Struct expressions evaluate fields in the order written,
                // which is the wire order.
                Ok(Self { $( $f: <$t as $crate::xdr::Decode>::decode(_r)?, )* })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round<T: Encode + Decode + PartialEq + std::fmt::Debug>(v: T) {
        let b = to_bytes(&v);
        assert_eq!(b.len() % 4, 0, "XDR items are multiples of 4 bytes");
        let mut r = Reader::new(&b);
        let back = T::decode(&mut r);
        assert_eq!(back.as_ref(), Ok(&v));
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn known_encodings() {
        assert_eq!(to_bytes(&1u32), [0, 0, 0, 1]);
        assert_eq!(to_bytes(&-1i32), [0xff; 4]);
        assert_eq!(to_bytes(&0x0102030405060708u64), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(to_bytes("abcde"), [0, 0, 0, 5, b'a', b'b', b'c', b'd', b'e', 0, 0, 0]);
        assert_eq!(to_bytes(&Some(XdrString::<8>("a".into()))), [0, 0, 0, 1, 0, 0, 0, 1, b'a', 0, 0, 0]);
        assert_eq!(to_bytes(&None::<u32>), [0, 0, 0, 0]);
    }

    #[test]
    fn limits() {
        // A string longer than its maximum.
        assert_eq!(from_bytes::<XdrString<2>>(&to_bytes("abc")), Err(XdrError::TooLong { len: 3, max: 2 }));
        // A length beyond the bytes present: an error, no allocation.
        let huge = [0xff, 0xff, 0xff, 0xf0];
        assert!(matches!(from_bytes::<Opaque<{ usize::MAX }>>(&huge), Err(XdrError::Truncated { .. })));
        assert!(matches!(from_bytes::<VarArray<u64, { usize::MAX }>>(&huge), Err(XdrError::Truncated { .. })));
        // Missing padding.
        assert!(from_bytes::<NonnullString>(&[0, 0, 0, 1, b'a']).is_err());
        assert_eq!(from_bytes::<bool>(&[0, 0, 0, 2]), Err(XdrError::BadBool(2)));
        assert_eq!(from_bytes::<NonnullString>(&[0, 0, 0, 1, 0xff, 0, 0, 0]), Err(XdrError::BadUtf8));
    }

    proptest! {
        #[test]
        fn ints_round_trip(a: u32, b: i32, c: u64, d: i64, e: bool) {
            round(a); round(b); round(c); round(d); round(e);
        }

        #[test]
        fn strings_round_trip(s in ".{0,40}", o in proptest::collection::vec(any::<u8>(), 0..40)) {
            round(XdrString::<160>(s.clone()));
            round(Some(XdrString::<REMOTE_STRING_MAX>(s)));
            round(Opaque::<64>(o));
            round(None::<NonnullString>);
        }

        #[test]
        fn arrays_round_trip(u: [u8; 16], odd: [u8; 5], v in proptest::collection::vec(any::<i32>(), 0..20),
                             names in proptest::collection::vec(".{0,8}", 0..8), f: [u32; 3]) {
            round(u); round(odd);
            round(VarArray::<i32, 20>(v));
            round(VarArray::<NonnullString, 8>(names.into_iter().map(XdrString).collect()));
            round(FixedArray(f));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = from_bytes::<u32>(&b);
            let _ = from_bytes::<i64>(&b);
            let _ = from_bytes::<bool>(&b);
            let _ = from_bytes::<Uuid>(&b);
            let _ = from_bytes::<NonnullString>(&b);
            let _ = from_bytes::<RemoteString>(&b);
            let _ = from_bytes::<Opaque<16>>(&b);
            let _ = from_bytes::<VarArray<NonnullString, 16384>>(&b);
            let _ = from_bytes::<VarArray<Option<u64>, 16>>(&b);
            let _ = from_bytes::<FixedArray<u32, 4>>(&b);
        }
    }
}
