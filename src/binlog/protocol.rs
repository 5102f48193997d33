//! The replica side of MariaDB's replication protocol, just enough to
//! receive the binlog as raw bytes: handshake with `mysql_native_password`,
//! `COM_QUERY` for the session variables a replica sets, `COM_REGISTER_SLAVE`
//! and `COM_BINLOG_DUMP`, then one event per packet.
//!
//! Why not `mysql_async`'s binlog stream: its request keeps only the
//! `NON_BLOCK` flag of `COM_BINLOG_DUMP`, so the server never sends the
//! `ANNOTATE_ROWS` events it writes into its own files (flag 2,
//! `BINLOG_SEND_ANNOTATE_ROWS_EVENT`), and it re-serialises each event from
//! parsed fields. An archive that must hold the server's files byte for
//! byte needs the packets as they arrive, so this module hands them over
//! untouched. It does not interpret events (see `binlog/event.rs`) and runs
//! no other query than the `SET`s of a replica.

use std::time::Duration;

use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::config::DbSettings;

/// `BINLOG_SEND_ANNOTATE_ROWS_EVENT`: ask for the `ANNOTATE_ROWS` events too.
const SEND_ANNOTATE_ROWS: u16 = 2;
/// `MARIA_SLAVE_CAPABILITY_GTID`: the server sends MariaDB's own events
/// (GTID, GTID list, binlog checkpoint) unchanged.
const SLAVE_CAPABILITY: u32 = 4;
/// A packet of this length is followed by the rest of its payload.
const MAX_PACKET: usize = 0xFF_FFFF;

/// Errors of the replication connection.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The network failed or the server closed the connection.
    #[error("replication connection to {addr}: {detail}")]
    Io {
        /// host:port
        addr: String,
        /// What happened.
        detail: String,
    },
    /// The server answered with an error packet.
    #[error("MariaDB at {addr} answered {what} with error {code}: {message}")]
    Server {
        /// host:port
        addr: String,
        /// What we asked.
        what: &'static str,
        /// The server's error code.
        code: u16,
        /// The server's message.
        message: String,
    },
    /// The server spoke something we do not understand.
    #[error("replication connection to {addr}: {detail}")]
    Protocol {
        /// host:port
        addr: String,
        /// What was wrong.
        detail: String,
    },
}

impl ProtocolError {
    /// The server error code, when the server answered with one.
    pub fn server_code(&self) -> Option<u16> {
        match self {
            ProtocolError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What the server sent on a binlog stream.
#[derive(Debug)]
pub enum Packet {
    /// One event, header to checksum, exactly as the server sent it.
    Event(Vec<u8>),
    /// The server ended the stream.
    End,
}

/// An authenticated connection, before or after `COM_BINLOG_DUMP`.
pub struct ReplicaConn {
    stream: BufReader<TcpStream>,
    addr: String,
    seq: u8,
    /// The connection id the server gave us (for `KILL` in tests and logs).
    pub connection_id: u32,
}

impl std::fmt::Debug for ReplicaConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaConn")
            .field("addr", &self.addr)
            .field("connection_id", &self.connection_id)
            .finish()
    }
}

impl ReplicaConn {
    /// Connect and log in as `db.user` (no default database).
    pub async fn connect(db: &DbSettings, timeout: Duration) -> Result<Self, ProtocolError> {
        let addr = crate::db::addr(db);
        let io = |detail: String| ProtocolError::Io {
            addr: addr.clone(),
            detail,
        };
        let tcp = tokio::time::timeout(timeout, TcpStream::connect((db.host.as_str(), db.port)))
            .await
            .map_err(|_| io(format!("no answer within {}s", timeout.as_secs())))?
            .map_err(|e| io(e.to_string()))?;
        tcp.set_nodelay(true).map_err(|e| io(e.to_string()))?;
        let mut conn = ReplicaConn {
            stream: BufReader::with_capacity(256 * 1024, tcp),
            addr: addr.clone(),
            seq: 0,
            connection_id: 0,
        };
        tokio::time::timeout(timeout, conn.handshake(db))
            .await
            .map_err(|_| io(format!("login took more than {}s", timeout.as_secs())))??;
        Ok(conn)
    }

    async fn handshake(&mut self, db: &DbSettings) -> Result<(), ProtocolError> {
        let hello = self.read_packet().await?;
        if hello.first() == Some(&0xFF) {
            return Err(self.server_error("the connection", &hello));
        }
        let greeting =
            parse_greeting(&hello).ok_or_else(|| self.protocol("unreadable server greeting"))?;
        self.connection_id = greeting.connection_id;
        let password = db.password.expose().as_bytes();
        let plugin = "mysql_native_password";
        let auth = native_scramble(password, &greeting.scramble);
        // CLIENT_LONG_PASSWORD | LONG_FLAG | PROTOCOL_41 | TRANSACTIONS |
        // SECURE_CONNECTION | MULTI_RESULTS | PLUGIN_AUTH
        let caps: u32 = 0x1 | 0x4 | 0x200 | 0x2000 | 0x8000 | 0x2_0000 | 0x8_0000;
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&caps.to_le_bytes());
        out.extend_from_slice(&(1u32 << 30).to_le_bytes());
        out.push(45); // utf8mb4_general_ci
        out.extend_from_slice(&[0u8; 23]);
        out.extend_from_slice(db.user.as_bytes());
        out.push(0);
        out.push(auth.len() as u8);
        out.extend_from_slice(&auth);
        out.extend_from_slice(plugin.as_bytes());
        out.push(0);
        self.write_packet(&out).await?;
        let mut reply = self.read_packet().await?;
        if reply.first() == Some(&0xFE) {
            // Auth switch: the account's plugin, with a fresh scramble.
            let body = &reply[1..];
            let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
            let wanted = String::from_utf8_lossy(&body[..end]).into_owned();
            if wanted != plugin {
                return Err(self.protocol(&format!(
                    "user '{}' logs in with the {wanted} plugin; the binlog archive supports mysql_native_password: \
                     ALTER USER '{}' IDENTIFIED VIA mysql_native_password USING PASSWORD('...')",
                    db.user, db.user
                )));
            }
            let seed: Vec<u8> = body
                .get(end + 1..)
                .unwrap_or_default()
                .iter()
                .copied()
                .take(20)
                .collect();
            let auth = native_scramble(password, &seed);
            self.write_packet(&auth).await?;
            reply = self.read_packet().await?;
        }
        match reply.first() {
            Some(0x00) => Ok(()),
            Some(0xFF) => Err(self.server_error("the login", &reply)),
            _ => Err(self.protocol("unexpected answer to the login")),
        }
    }

    /// Run one statement that answers OK (a `SET`).
    pub async fn execute(&mut self, sql: &str) -> Result<(), ProtocolError> {
        self.seq = 0;
        let mut out = Vec::with_capacity(sql.len() + 1);
        out.push(0x03);
        out.extend_from_slice(sql.as_bytes());
        self.write_packet(&out).await?;
        let reply = self.read_packet().await?;
        match reply.first() {
            Some(0x00) => Ok(()),
            Some(0xFF) => Err(self.server_error("a SET statement", &reply)),
            _ => Err(self.protocol(&format!("unexpected answer to {sql}"))),
        }
    }

    /// Register as replica `server_id` and ask for the binlog from `file`
    /// at `position`, with every event type the server writes, checksums as
    /// in its files, and a heartbeat after `heartbeat` of silence.
    pub async fn start_dump(
        &mut self,
        server_id: u32,
        file: &str,
        position: u64,
        heartbeat: Duration,
    ) -> Result<(), ProtocolError> {
        // The server sends each event with the checksum its files have
        // (CRC32 by default): the bytes we archive are the file's bytes.
        self.execute("SET @master_binlog_checksum = @@global.binlog_checksum")
            .await?;
        self.execute(&format!(
            "SET @mariadb_slave_capability = {SLAVE_CAPABILITY}"
        ))
        .await?;
        self.execute(&format!(
            "SET @master_heartbeat_period = {}",
            heartbeat.as_nanos()
        ))
        .await?;
        self.seq = 0;
        let mut reg = vec![0x15];
        reg.extend_from_slice(&server_id.to_le_bytes());
        reg.extend_from_slice(&[0, 0, 0]); // host, user, password: empty
        reg.extend_from_slice(&0u16.to_le_bytes());
        reg.extend_from_slice(&0u32.to_le_bytes());
        reg.extend_from_slice(&0u32.to_le_bytes());
        self.write_packet(&reg).await?;
        let reply = self.read_packet().await?;
        if reply.first() == Some(&0xFF) {
            return Err(self.server_error("COM_REGISTER_SLAVE", &reply));
        }
        let position = u32::try_from(position)
            .map_err(|_| self.protocol(&format!("position {position} is past 4 GiB")))?;
        self.seq = 0;
        let mut dump = vec![0x12];
        dump.extend_from_slice(&position.to_le_bytes());
        dump.extend_from_slice(&SEND_ANNOTATE_ROWS.to_le_bytes());
        dump.extend_from_slice(&server_id.to_le_bytes());
        dump.extend_from_slice(file.as_bytes());
        self.write_packet(&dump).await
    }

    /// The next packet of a binlog stream.
    pub async fn next_event(&mut self) -> Result<Packet, ProtocolError> {
        let mut p = self.read_packet().await?;
        match p.first() {
            Some(0x00) => {
                p.remove(0);
                Ok(Packet::Event(p))
            }
            Some(0xFE) if p.len() < 8 => Ok(Packet::End),
            Some(0xFF) => Err(self.server_error("the binlog request", &p)),
            _ => Err(self.protocol("unexpected packet in the binlog stream")),
        }
    }

    async fn read_packet(&mut self) -> Result<Vec<u8>, ProtocolError> {
        let mut payload = Vec::new();
        loop {
            let mut head = [0u8; 4];
            self.stream
                .read_exact(&mut head)
                .await
                .map_err(|e| self.io_error(e))?;
            let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
            self.seq = head[3].wrapping_add(1);
            let start = payload.len();
            payload.resize(start + len, 0);
            self.stream
                .read_exact(&mut payload[start..])
                .await
                .map_err(|e| self.io_error(e))?;
            if len < MAX_PACKET {
                return Ok(payload);
            }
        }
    }

    async fn write_packet(&mut self, payload: &[u8]) -> Result<(), ProtocolError> {
        let mut chunks = payload.chunks(MAX_PACKET).peekable();
        let mut out = Vec::with_capacity(payload.len() + 8);
        loop {
            let chunk = chunks.next().unwrap_or_default();
            let len = chunk.len();
            out.extend_from_slice(&[len as u8, (len >> 8) as u8, (len >> 16) as u8, self.seq]);
            self.seq = self.seq.wrapping_add(1);
            out.extend_from_slice(chunk);
            // A payload that is an exact multiple of the maximum ends with
            // an empty packet.
            if chunks.peek().is_none() && len < MAX_PACKET {
                break;
            }
        }
        let stream = self.stream.get_mut();
        stream.write_all(&out).await.map_err(|e| self.io_error(e))?;
        Ok(())
    }

    fn io_error(&self, e: std::io::Error) -> ProtocolError {
        let detail = if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "the server closed the connection".to_owned()
        } else {
            e.to_string()
        };
        ProtocolError::Io {
            addr: self.addr.clone(),
            detail,
        }
    }

    fn protocol(&self, detail: &str) -> ProtocolError {
        ProtocolError::Protocol {
            addr: self.addr.clone(),
            detail: detail.to_owned(),
        }
    }

    fn server_error(&self, what: &'static str, p: &[u8]) -> ProtocolError {
        let code = p.get(1..3).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
        let rest = p.get(3..).unwrap_or_default();
        let msg = match rest.first() {
            Some(b'#') => rest.get(6..).unwrap_or_default(),
            _ => rest,
        };
        ProtocolError::Server {
            addr: self.addr.clone(),
            what,
            code,
            message: String::from_utf8_lossy(msg).into_owned(),
        }
    }
}

struct Greeting {
    connection_id: u32,
    scramble: Vec<u8>,
}

/// The connection id and the 20-byte scramble of a protocol-10 greeting.
fn parse_greeting(p: &[u8]) -> Option<Greeting> {
    if *p.first()? != 10 {
        return None;
    }
    let version_end = 1 + p.get(1..)?.iter().position(|&b| b == 0)?;
    let mut i = version_end + 1;
    let connection_id = u32::from_le_bytes(p.get(i..i + 4)?.try_into().ok()?);
    i += 4;
    let mut scramble = p.get(i..i + 8)?.to_vec();
    // part 1, filler, capabilities (2), charset, status (2), capabilities
    // (2), auth data length, 10 reserved bytes
    i += 8 + 1 + 2 + 1 + 2 + 2;
    let auth_len = usize::from(*p.get(i)?);
    i += 1 + 10;
    let part2 = auth_len.saturating_sub(8).max(13);
    let rest = p.get(i..i + part2)?;
    scramble.extend_from_slice(&rest[..rest.len().min(12)]);
    Some(Greeting {
        connection_id,
        scramble,
    })
}

/// `mysql_native_password`: SHA1(pw) XOR SHA1(seed + SHA1(SHA1(pw))).
fn native_scramble(password: &[u8], seed: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Sha1::digest(password);
    let stage2 = Sha1::digest(stage1);
    let mut h = Sha1::new();
    h.update(seed);
    h.update(stage2);
    let mix = h.finalize();
    stage1.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect()
}
