//! The protocol's message test vectors (`protocol/vectors/messages/{envelope,body,frame}`),
//! embedded when the suite is built. Cases replay the ones whose expected verdict maps onto
//! an observable answer of a node (see `cases::envelope` and `cases::query`).

/// One vector, as the vector file gives it.
#[derive(Debug, Clone, Copy)]
pub struct Vector {
    /// The vector's id, e.g. `envelope/weak-key-identity`.
    pub id: &'static str,
    /// The message kind the vector's envelope claims, when it names one.
    pub message: Option<&'static str>,
    /// The expected verdict, e.g. `invalid`, `trailing_bytes`, `too_large`, `truncated`.
    pub expect: &'static str,
    /// The limit the verdict assumes, when the vector fixes one.
    pub max_bytes: Option<u64>,
    /// For frame vectors: how many complete frames the bytes hold.
    pub frames: usize,
    /// The bytes, hex-encoded.
    pub hex: &'static str,
}

impl Vector {
    /// The vector's bytes.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        hex::decode(self.hex).ok()
    }

    /// The vector's folder (`envelope`, `body`, `frame`).
    pub fn group(&self) -> &'static str {
        self.id.split('/').next().unwrap_or("")
    }
}

include!(concat!(env!("OUT_DIR"), "/vectors.rs"));
