//! TDS framing for the simulator: reading client messages (packets reassembled up to EOM),
//! writing responses split at the negotiated packet size, PRELOGIN (with its encryption choice)
//! and LOGIN7 decoding, and the
//! token encoders (LOGINACK, ENVCHANGE, DONE*, ERROR, INFO, COLMETADATA, ROW, RETURNSTATUS).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::types::{self, SqlType, Value};

/// Packet types.
pub const SQL_BATCH: u8 = 0x01;
pub const RPC: u8 = 0x03;
pub const ATTENTION: u8 = 0x06;
pub const TRANSACTION_MANAGER: u8 = 0x0E;
pub const LOGIN7: u8 = 0x10;
pub const PRELOGIN: u8 = 0x12;
const RESPONSE: u8 = 0x04;

/// Largest client message accepted (a batch or RPC with its parameters).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Bounds-checked little-endian reader over a message body.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos.min(self.buf.len())..]
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| "message ends early".to_string())?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, String> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn u24(&mut self) -> Result<u32, String> {
        let b = self.bytes(3)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }
    pub fn u32(&mut self) -> Result<u32, String> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64, String> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// B_VARCHAR: u8 character count, UTF-16LE.
    pub fn b_varchar(&mut self) -> Result<String, String> {
        let n = usize::from(self.u8()?);
        types::utf16(self.bytes(n * 2)?)
    }
    /// A variable-length value of a type declared with maximum length `max`: PLP for `(max)`
    /// types (0xFFFF), else a u16 length (0xFFFF = NULL). `None` for NULL.
    pub fn var_bytes(&mut self, max: u16) -> Result<Option<Vec<u8>>, String> {
        if max == 0xFFFF {
            return self.plp();
        }
        match self.u16()? {
            0xFFFF => Ok(None),
            n => Ok(Some(self.bytes(usize::from(n))?.to_vec())),
        }
    }
    /// A PLP value: `None` for PLP NULL.
    pub fn plp(&mut self) -> Result<Option<Vec<u8>>, String> {
        let total = self.u64()?;
        if total == u64::MAX {
            return Ok(None);
        }
        let mut out = Vec::new();
        loop {
            let n = self.u32()? as usize;
            if n == 0 {
                break;
            }
            out.extend_from_slice(self.bytes(n)?);
            if out.len() > MAX_MESSAGE {
                return Err("PLP value too large".into());
            }
        }
        Ok(Some(out))
    }
    /// Skips ALL_HEADERS and returns the transaction descriptor it carries (0 when absent).
    pub fn all_headers(&mut self) -> Result<u64, String> {
        let total = self.u32()? as usize;
        if total < 4 {
            return Err("invalid ALL_HEADERS length".into());
        }
        let headers = self.bytes(total - 4)?;
        let mut r = Reader::new(headers);
        let mut descriptor = 0;
        while !r.at_end() {
            let len = r.u32()? as usize;
            if len < 6 {
                return Err("invalid header length".into());
            }
            let ty = r.u16()?;
            let body = r.bytes(len - 6)?;
            if ty == 2 && body.len() >= 8 {
                let mut a = [0u8; 8];
                a.copy_from_slice(&body[..8]);
                descriptor = u64::from_le_bytes(a);
            }
        }
        Ok(descriptor)
    }
}

/// Reads one client message (all packets up to EOM). `Ok(None)` on a clean end of stream.
pub async fn read_message<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut body = Vec::new();
    let mut first_type = None;
    loop {
        let mut header = [0u8; 8];
        match stream.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && first_type.is_none() => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if length < 8 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "TDS packet shorter than its header",
            ));
        }
        let start = body.len();
        body.resize(start + length - 8, 0);
        stream.read_exact(&mut body[start..]).await?;
        if body.len() > MAX_MESSAGE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "TDS message too large",
            ));
        }
        let ty = *first_type.get_or_insert(header[0]);
        if header[1] & 0x01 != 0 {
            return Ok(Some((ty, body)));
        }
    }
}

/// Reads client messages through a buffer, so that waiting for the next one can be abandoned
/// (a request finished first) without losing bytes: `next` is cancel safe.
#[derive(Debug, Default)]
pub struct Incoming {
    buf: Vec<u8>,
}

impl Incoming {
    /// The next whole message (packet type and reassembled body); `None` at a clean EOF.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
    ) -> std::io::Result<Option<(u8, Vec<u8>)>> {
        loop {
            if let Some(message) = self.take()? {
                return Ok(Some(message));
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn take(&mut self) -> std::io::Result<Option<(u8, Vec<u8>)>> {
        let mut at = 0;
        loop {
            let Some(header) = self.buf.get(at..at + 8) else {
                return Ok(None);
            };
            let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
            if length < 8 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "TDS packet shorter than its header",
                ));
            }
            let last = header[1] & 0x01 != 0;
            if self.buf.len() < at + length {
                return Ok(None);
            }
            at += length;
            if at > MAX_MESSAGE {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "TDS message too large",
                ));
            }
            if last {
                break;
            }
        }
        let ty = self.buf[0];
        let mut body = Vec::with_capacity(at);
        let mut p = 0;
        while p < at {
            let length = usize::from(u16::from_be_bytes([self.buf[p + 2], self.buf[p + 3]]));
            body.extend_from_slice(&self.buf[p + 8..p + length]);
            p += length;
        }
        self.buf.drain(..at);
        Ok(Some((ty, body)))
    }
}

/// Writes a response message split into packets of `packet_size` bytes.
pub async fn write_message<W: AsyncWrite + Unpin>(
    stream: &mut W,
    payload: &[u8],
    packet_size: usize,
    spid: u16,
) -> std::io::Result<()> {
    let chunk = packet_size.max(512) - 8;
    let mut packets = Vec::with_capacity(payload.len() + (payload.len() / chunk + 1) * 8);
    let count = payload.len().div_ceil(chunk).max(1);
    for i in 0..count {
        let part = &payload[(i * chunk).min(payload.len())..((i + 1) * chunk).min(payload.len())];
        let last = i + 1 == count;
        packets.push(RESPONSE);
        packets.push(u8::from(last));
        packets.extend_from_slice(&((part.len() + 8) as u16).to_be_bytes());
        packets.extend_from_slice(&spid.to_be_bytes());
        packets.push(((i + 1) % 256) as u8);
        packets.push(0);
        packets.extend_from_slice(part);
    }
    stream.write_all(&packets).await?;
    stream.flush().await
}

/// PRELOGIN ENCRYPTION values.
pub const ENCRYPT_OFF: u8 = 0x00;
pub const ENCRYPT_ON: u8 = 0x01;
pub const ENCRYPT_NOT_SUP: u8 = 0x02;
pub const ENCRYPT_REQ: u8 = 0x03;

/// The ENCRYPTION value of a client's PRELOGIN (ENCRYPT_OFF when the option is absent).
pub fn prelogin_encryption(body: &[u8]) -> Result<u8, String> {
    let mut r = Reader::new(body);
    loop {
        let token = r.u8()?;
        if token == 0xFF {
            return Ok(ENCRYPT_OFF);
        }
        let mut pair = Reader::new(r.bytes(4)?);
        let offset = usize::from(u16::from_be_bytes([pair.u8()?, pair.u8()?]));
        let length = usize::from(u16::from_be_bytes([pair.u8()?, pair.u8()?]));
        if token == 0x01 {
            return match body.get(offset..offset.saturating_add(length)) {
                Some([value, ..]) => Ok(*value),
                _ => Err("PRELOGIN ENCRYPTION option out of range".into()),
            };
        }
    }
}

/// The PRELOGIN answer: version 16.0, the given encryption, no instance, MARS off.
pub fn prelogin_response(encryption: u8) -> Vec<u8> {
    // Options: VERSION(6 bytes) ENCRYPTION(1) INSTOPT(1) THREADID(0) MARS(1), then terminator.
    let encryption = [encryption];
    let options: [(u8, &[u8]); 4] = [
        (0x00, &[16, 0, 0x10, 0x00, 0, 0]),
        (0x01, &encryption),
        (0x02, &[0x00]),
        (0x04, &[0x00]),
    ];
    let header_len = options.len() * 5 + 1;
    let mut head = Vec::new();
    let mut data = Vec::new();
    for (token, value) in options {
        head.push(token);
        head.extend_from_slice(&((header_len + data.len()) as u16).to_be_bytes());
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        data.extend_from_slice(value);
    }
    head.push(0xFF);
    head.extend_from_slice(&data);
    head
}

/// What the simulator needs from LOGIN7.
#[derive(Debug)]
pub struct Login {
    pub packet_size: u32,
    pub user: String,
    pub password: String,
    pub database: String,
}

/// Decodes a LOGIN7 message body.
pub fn parse_login(body: &[u8]) -> Result<Login, String> {
    let mut r = Reader::new(body);
    let _length = r.u32()?;
    let _version = r.u32()?;
    let packet_size = r.u32()?;
    let field = |index: usize| -> Result<&[u8], String> {
        let at = 36 + index * 4;
        let mut fr = Reader::new(body);
        fr.bytes(at)?;
        let offset = usize::from(fr.u16()?);
        let len = usize::from(fr.u16()?) * 2;
        body.get(offset..offset + len)
            .ok_or_else(|| "LOGIN7 field out of range".to_string())
    };
    let user = types::utf16(field(1)?)?;
    let scrambled = field(2)?;
    let clear: Vec<u8> = scrambled
        .iter()
        .map(|b| {
            let x = b ^ 0xA5;
            x.rotate_left(4)
        })
        .collect();
    let password = types::utf16(&clear)?;
    let database = types::utf16(field(8)?)?;
    Ok(Login {
        packet_size,
        user,
        password,
        database,
    })
}

/// DONE status bits.
pub const DONE_MORE: u16 = 0x0001;
pub const DONE_ERROR: u16 = 0x0002;
pub const DONE_COUNT: u16 = 0x0010;
pub const DONE_ATTN: u16 = 0x0020;

/// Token kinds that end a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneKind {
    Done = 0xFD,
    Proc = 0xFE,
    InProc = 0xFF,
}

/// Appends TDS tokens to a response buffer.
#[derive(Debug, Default)]
pub struct Tokens {
    pub buf: Vec<u8>,
}

fn push_b_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(255).collect();
    out.push(units.len() as u8);
    for u in units {
        out.extend_from_slice(&u.to_le_bytes());
    }
}

fn push_us_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(4094).collect();
    out.extend_from_slice(&(units.len() as u16).to_le_bytes());
    for u in units {
        out.extend_from_slice(&u.to_le_bytes());
    }
}

impl Tokens {
    fn with_len(&mut self, token: u8, body: Vec<u8>) {
        self.buf.push(token);
        self.buf
            .extend_from_slice(&(body.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(&body);
    }

    /// ENVCHANGE with two B_VARCHAR values (database 1, language 2, packet size 4).
    pub fn env_change_text(&mut self, ty: u8, new: &str, old: &str) {
        let mut body = vec![ty];
        push_b_varchar(&mut body, new);
        push_b_varchar(&mut body, old);
        self.with_len(0xE3, body);
    }

    /// ENVCHANGE with two B_VARBYTE values (collation 7, transactions 8/9/10).
    pub fn env_change_bytes(&mut self, ty: u8, new: &[u8], old: &[u8]) {
        let mut body = vec![ty, new.len() as u8];
        body.extend_from_slice(new);
        body.push(old.len() as u8);
        body.extend_from_slice(old);
        self.with_len(0xE3, body);
    }

    pub fn login_ack(&mut self) {
        let mut body = vec![1];
        body.extend_from_slice(&0x7400_0004u32.to_be_bytes());
        push_b_varchar(&mut body, "Microsoft SQL Server");
        body.extend_from_slice(&[16, 0, 0x10, 0x00]);
        self.with_len(0xAD, body);
    }

    fn message(&mut self, token: u8, number: u32, state: u8, class: u8, text: &str) {
        let mut body = Vec::new();
        body.extend_from_slice(&number.to_le_bytes());
        body.push(state);
        body.push(class);
        // Keeps the token within its u16 length (SQL Server messages are at most 2,047 chars).
        let text: String = text.chars().take(2047).collect();
        push_us_varchar(&mut body, &text);
        push_b_varchar(&mut body, "hubsync-sim");
        push_b_varchar(&mut body, "");
        body.extend_from_slice(&1u32.to_le_bytes());
        self.with_len(token, body);
    }

    pub fn error(&mut self, number: u32, state: u8, class: u8, text: &str) {
        self.message(0xAA, number, state, class, text);
    }

    pub fn info(&mut self, number: u32, text: &str) {
        self.message(0xAB, number, 1, 0, text);
    }

    pub fn done(&mut self, kind: DoneKind, status: u16, rows: u64) {
        self.buf.push(kind as u8);
        self.buf.extend_from_slice(&status.to_le_bytes());
        self.buf.extend_from_slice(&0u16.to_le_bytes());
        self.buf.extend_from_slice(&rows.to_le_bytes());
    }

    pub fn return_status(&mut self, status: i32) {
        self.buf.push(0x79);
        self.buf.extend_from_slice(&status.to_le_bytes());
    }

    pub fn col_metadata(&mut self, columns: &[(String, SqlType, bool)]) {
        self.buf.push(0x81);
        self.buf
            .extend_from_slice(&(columns.len() as u16).to_le_bytes());
        for (name, ty, nullable) in columns {
            ty.encode_column_info(*nullable, &mut self.buf);
            push_b_varchar(&mut self.buf, name);
        }
    }

    /// A ROW token; on a conversion failure the buffer is left as it was.
    pub fn row(&mut self, types: &[SqlType], values: &[Value]) -> Result<(), types::Conversion> {
        let mark = self.buf.len();
        self.buf.push(0xD1);
        for (ty, value) in types.iter().zip(values) {
            if let Err(e) = types::encode_value(ty, value, &mut self.buf) {
                self.buf.truncate(mark);
                return Err(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prelogin_answer_offsets_point_at_the_data() {
        let p = prelogin_response(ENCRYPT_NOT_SUP);
        // ENCRYPTION option: token 1 at index 5, offset then length.
        assert_eq!(p[5], 0x01);
        let offset = usize::from(u16::from_be_bytes([p[6], p[7]]));
        assert_eq!(p[offset], 0x02);
        assert_eq!(p[20], 0xFF);
        for value in [ENCRYPT_OFF, ENCRYPT_ON, ENCRYPT_NOT_SUP, ENCRYPT_REQ] {
            assert_eq!(prelogin_encryption(&prelogin_response(value)), Ok(value));
        }
        assert_eq!(prelogin_encryption(&[0xFF]), Ok(ENCRYPT_OFF));
        assert!(prelogin_encryption(&[0x01, 0, 50, 0, 1, 0xFF]).is_err());
    }

    proptest::proptest! {
        /// Malformed client bytes are errors, never panics.
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_login(&bytes);
            let _ = prelogin_encryption(&bytes);
            let mut r = Reader::new(&bytes);
            while !r.at_end() {
                if types::decode_param_value(&mut r).is_err() {
                    break;
                }
            }
            let mut r = Reader::new(&bytes);
            let _ = r.all_headers();
            let _ = r.plp();
        }
    }

    #[test]
    fn reader_refuses_to_run_past_the_end() {
        let mut r = Reader::new(&[1, 2]);
        assert!(r.u32().is_err());
        assert_eq!(r.u16().unwrap(), 0x0201);
    }
}
