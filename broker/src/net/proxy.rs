//! The client address a trusted proxy passes on: the PROXY protocol v2
//! header (HAProxy's `send-proxy-v2`) at the start of the connection, or
//! the `X-Forwarded-For` header of an HTTP request (Caddy, nginx).
//!
//! Both are believed only on a connection whose peer is one of the
//! `--trusted-proxy` addresses ([`crate::config::BrokerConfig::trusted_proxies`]).
//! From any other peer a PROXY header is garbage input (the connection is
//! closed, `connections_rejected_total{reason="untrusted_proxy_header"}`)
//! and `X-Forwarded-For` is ignored.
//!
//! The v2 header (haproxy.org/download/2.6/doc/proxy-protocol.txt, §2.2):
//! a 12-byte signature, a version/command byte (`0x20` LOCAL, `0x21`
//! PROXY), a family/transport byte, a big-endian 16-bit length of what
//! follows, then the addresses (IPv4: 12 bytes, IPv6: 36) and optional
//! TLVs, which are skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The first 12 bytes of every PROXY v2 header.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Signature, version/command, family, length.
const FIXED_LEN: usize = 16;

/// The longest address block and TLVs accepted after the fixed part. The
/// addresses take at most 216 bytes (AF_UNIX); HAProxy adds TLVs only when
/// told to. A longer header is refused rather than read.
pub const MAX_BODY_LEN: usize = 1024;

/// What a PROXY v2 header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The proxy's own connection (a health check): the peer address is
    /// the client.
    Local,
    /// A relayed connection from `source`.
    Proxied { source: SocketAddr },
    /// A relayed connection whose family carries no IP address (UNSPEC or
    /// AF_UNIX): counted as the proxy's own.
    Unknown,
}

/// Why a PROXY v2 header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The connection ended inside the header.
    Truncated,
    /// The version nibble is not 2.
    Version(u8),
    /// The command nibble is neither LOCAL nor PROXY.
    Command(u8),
    /// The length field is over [`MAX_BODY_LEN`].
    TooLong(usize),
    /// The length is too short for the addresses of the family.
    ShortAddresses { family: u8, len: usize },
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated => write!(f, "the connection ended inside the PROXY header"),
            Self::Version(v) => write!(f, "PROXY header version {v}, expected 2"),
            Self::Command(c) => write!(f, "PROXY header command {c}, expected 0 or 1"),
            Self::TooLong(n) => write!(f, "PROXY header of {n} bytes, over {MAX_BODY_LEN}"),
            Self::ShortAddresses { family, len } => {
                write!(
                    f,
                    "PROXY header family {family:#x} with only {len} address bytes"
                )
            }
        }
    }
}

impl std::error::Error for ProxyError {}

/// The outcome of parsing the bytes read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The bytes do not begin with the signature: not a PROXY header.
    NotProxy,
    /// A header needs this many bytes in all; read more.
    Incomplete { total: usize },
    /// A whole header, `len` bytes long.
    Complete { header: ProxyHeader, len: usize },
}

/// Parses the start of a connection.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let sig = buf.len().min(SIGNATURE.len());
    if buf[..sig] != SIGNATURE[..sig] {
        return Ok(Parsed::NotProxy);
    }
    if buf.len() < FIXED_LEN {
        return Ok(Parsed::Incomplete { total: FIXED_LEN });
    }
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    if version != 2 {
        return Err(ProxyError::Version(version));
    }
    if command > 1 {
        return Err(ProxyError::Command(command));
    }
    let body_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if body_len > MAX_BODY_LEN {
        return Err(ProxyError::TooLong(body_len));
    }
    let total = FIXED_LEN + body_len;
    if buf.len() < total {
        return Ok(Parsed::Incomplete { total });
    }
    let body = &buf[FIXED_LEN..total];
    let family = buf[13] >> 4;
    let header = if command == 0 {
        ProxyHeader::Local
    } else {
        match family {
            1 => {
                let a = body.get(..12).ok_or(ProxyError::ShortAddresses {
                    family: buf[13],
                    len: body_len,
                })?;
                let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
                let port = u16::from_be_bytes([a[8], a[9]]);
                ProxyHeader::Proxied {
                    source: SocketAddr::new(IpAddr::V4(ip), port),
                }
            }
            2 => {
                let a = body.get(..36).ok_or(ProxyError::ShortAddresses {
                    family: buf[13],
                    len: body_len,
                })?;
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[..16]);
                let port = u16::from_be_bytes([a[32], a[33]]);
                ProxyHeader::Proxied {
                    source: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port),
                }
            }
            _ => ProxyHeader::Unknown,
        }
    };
    Ok(Parsed::Complete { header, len: total })
}

/// What the start of a connection from a trusted proxy held.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// A PROXY v2 header, read whole (nothing after it was read).
    Header(ProxyHeader),
    /// No PROXY header: the bytes read while finding out, to be replayed
    /// to the HTTP server.
    NotProxy(Vec<u8>),
}

/// Reads a PROXY v2 header if the connection starts with one, never past
/// its end. The caller bounds the time (the unauthenticated deadline).
pub async fn read_start<S: AsyncRead + Unpin>(
    s: &mut S,
) -> std::io::Result<Result<Start, ProxyError>> {
    let mut buf = Vec::with_capacity(FIXED_LEN);
    let mut want = 1;
    loop {
        let have = buf.len();
        buf.resize(want, 0);
        let n = s.read(&mut buf[have..want]).await?;
        buf.truncate(have + n);
        if n == 0 {
            return Ok(match buf.is_empty() {
                true => Ok(Start::NotProxy(buf)),
                false if parse(&buf) == Ok(Parsed::NotProxy) => Ok(Start::NotProxy(buf)),
                false => Err(ProxyError::Truncated),
            });
        }
        match parse(&buf) {
            Ok(Parsed::NotProxy) => return Ok(Ok(Start::NotProxy(buf))),
            // The signature a byte at a time, then the rest in one read.
            Ok(Parsed::Incomplete { total }) if buf.len() < SIGNATURE.len() => {
                want = (buf.len() + 1).min(total);
            }
            Ok(Parsed::Incomplete { total }) => want = total,
            Ok(Parsed::Complete { header, .. }) => return Ok(Ok(Start::Header(header))),
            Err(e) => return Ok(Err(e)),
        }
    }
}

/// Whether bytes seen so far at the start of a connection are (the
/// beginning of) a PROXY v2 signature: `matched` bytes already matched,
/// `next` the bytes just read. The new count of matched bytes, or `None`
/// once they differ.
pub fn sniff(matched: usize, next: &[u8]) -> Option<usize> {
    let rest = &SIGNATURE[matched.min(SIGNATURE.len())..];
    let n = next.len().min(rest.len());
    (next[..n] == rest[..n]).then_some(matched + n)
}

/// The client address in `X-Forwarded-For` header values (in the order
/// received): the last address of the last value, the one the trusted
/// proxy added (anything before it came from the client and may be
/// forged). Accepts `1.2.3.4`, `1.2.3.4:5`, `::1`, `[::1]` and `[::1]:5`;
/// `None` when the last entry is none of these.
pub fn forwarded_client<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<IpAddr> {
    let last = values.last()?;
    let text = std::str::from_utf8(last).ok()?;
    let entry = text.rsplit(',').next()?.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = entry.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn v4_body() -> Vec<u8> {
        let mut b = vec![192, 0, 2, 7, 10, 0, 0, 1];
        b.extend_from_slice(&51000u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b
    }

    #[test]
    fn a_v4_header_names_the_client() {
        let mut h = v2(1, 0x11, &v4_body());
        let len = h.len();
        h.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse(&h),
            Ok(Parsed::Complete {
                header: ProxyHeader::Proxied {
                    source: "192.0.2.7:51000".parse().unwrap()
                },
                len
            })
        );
    }

    #[test]
    fn a_v6_header_with_tlvs_names_the_client() {
        let mut body = Vec::new();
        body.extend_from_slice(&"2001:db8::5".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&7u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0xff]); // a NOOP TLV
        let h = v2(1, 0x21, &body);
        let Ok(Parsed::Complete { header, len }) = parse(&h) else {
            panic!("{:?}", parse(&h))
        };
        assert_eq!(len, h.len());
        assert_eq!(
            header,
            ProxyHeader::Proxied {
                source: "[2001:db8::5]:7".parse().unwrap()
            }
        );
    }

    #[test]
    fn local_and_unspecified_headers_carry_no_client() {
        let h = v2(0, 0x00, &[]);
        assert_eq!(
            parse(&h),
            Ok(Parsed::Complete {
                header: ProxyHeader::Local,
                len: 16
            })
        );
        // LOCAL with addresses (HAProxy's health checks may send them).
        assert!(matches!(
            parse(&v2(0, 0x11, &v4_body())),
            Ok(Parsed::Complete {
                header: ProxyHeader::Local,
                ..
            })
        ));
        assert!(matches!(
            parse(&v2(1, 0x31, &[0u8; 216])),
            Ok(Parsed::Complete {
                header: ProxyHeader::Unknown,
                ..
            })
        ));
    }

    #[test]
    fn truncated_headers_ask_for_more() {
        let h = v2(1, 0x11, &v4_body());
        for cut in [1, 5, 12, 15] {
            assert_eq!(
                parse(&h[..cut]),
                Ok(Parsed::Incomplete { total: 16 }),
                "{cut}"
            );
        }
        assert_eq!(parse(&h[..20]), Ok(Parsed::Incomplete { total: 28 }));
    }

    #[test]
    fn bad_signatures_versions_commands_and_lengths_are_refused() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Ok(Parsed::NotProxy));
        assert_eq!(parse(b"\r\n\r\n\0\r\nQUIx\n...."), Ok(Parsed::NotProxy));
        // A v1 (text) header is not v2.
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
            Ok(Parsed::NotProxy)
        );
        let mut h = v2(1, 0x11, &v4_body());
        h[12] = 0x11;
        assert_eq!(parse(&h), Err(ProxyError::Version(1)));
        h[12] = 0x2f;
        assert_eq!(parse(&h), Err(ProxyError::Command(15)));
        let mut long = SIGNATURE.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&long), Err(ProxyError::TooLong(0xffff)));
        assert_eq!(
            parse(&v2(1, 0x11, &[1, 2, 3])),
            Err(ProxyError::ShortAddresses {
                family: 0x11,
                len: 3
            })
        );
        assert_eq!(
            parse(&v2(1, 0x21, &v4_body())),
            Err(ProxyError::ShortAddresses {
                family: 0x21,
                len: 12
            })
        );
    }

    #[tokio::test]
    async fn read_start_stops_at_the_header_or_the_first_foreign_byte() {
        let mut h = v2(1, 0x11, &v4_body());
        h.extend_from_slice(b"GET /");
        let mut r = &h[..];
        let start = read_start(&mut r).await.unwrap().unwrap();
        assert!(matches!(start, Start::Header(ProxyHeader::Proxied { .. })));
        assert_eq!(r, b"GET /");

        let mut r = &b"GET / HTTP/1.1\r\n"[..];
        assert_eq!(
            read_start(&mut r).await.unwrap().unwrap(),
            Start::NotProxy(b"G".to_vec())
        );
        // Ends inside the header.
        let cut = &v2(1, 0x11, &v4_body())[..20];
        let mut r = cut;
        assert_eq!(
            read_start(&mut r).await.unwrap(),
            Err(ProxyError::Truncated)
        );
        let mut r = &b""[..];
        assert_eq!(
            read_start(&mut r).await.unwrap().unwrap(),
            Start::NotProxy(Vec::new())
        );
    }

    #[test]
    fn sniffing_follows_the_signature_across_reads() {
        assert_eq!(sniff(0, b"\r\n"), Some(2));
        assert_eq!(sniff(2, b"\r\n\0\r\nQUIT\n\x21\x11"), Some(12));
        assert_eq!(sniff(0, b"GET"), None);
        assert_eq!(sniff(4, b"x"), None);
    }

    #[test]
    fn the_forwarded_client_is_the_last_address_the_proxy_added() {
        let one = |v: &str| forwarded_client(std::iter::once(v.as_bytes()));
        assert_eq!(one("203.0.113.9"), Some("203.0.113.9".parse().unwrap()));
        // A client's own (forged) entries come first.
        assert_eq!(
            one("10.6.6.6, 198.51.100.1,203.0.113.9 "),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(
            one("203.0.113.9:4711"),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(one("2001:db8::9"), Some("2001:db8::9".parse().unwrap()));
        assert_eq!(one("[2001:db8::9]"), Some("2001:db8::9".parse().unwrap()));
        assert_eq!(
            one("[2001:db8::9]:443"),
            Some("2001:db8::9".parse().unwrap())
        );
        assert_eq!(one("unknown"), None);
        assert_eq!(one("1.2.3.4, "), None);
        assert_eq!(forwarded_client(std::iter::empty()), None);
        // Of several header lines the last one counts.
        let lines = [&b"10.6.6.6"[..], &b"198.51.100.1, 203.0.113.4"[..]];
        assert_eq!(
            forwarded_client(lines.into_iter()),
            Some("203.0.113.4".parse().unwrap())
        );
        assert_eq!(forwarded_client([&b"\xff"[..]].into_iter()), None);
    }
}
