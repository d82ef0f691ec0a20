//! Reading one request line at a time, never more than the limit into
//! memory: a client that sends an endless line is cut off, not buffered.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One read from the socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its `\n` (and without a trailing `\r`).
    Complete(Vec<u8>),
    /// The line passed `limit` bytes before its end; the stream cannot be
    /// resynchronised, so the caller closes it.
    TooLong,
    /// The peer closed the connection (a final unterminated line is
    /// dropped: a request is only complete with its newline).
    Eof,
}

/// Reads the next line of at most `limit` bytes.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> std::io::Result<Line> {
    let mut line = Vec::new();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(Line::Eof);
        }
        match available.iter().position(|&b| b == b'\n') {
            Some(i) => {
                if line.len() + i > limit {
                    return Ok(Line::TooLong);
                }
                line.extend_from_slice(&available[..i]);
                reader.consume(i + 1);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Line::Complete(line));
            }
            None => {
                let n = available.len();
                if line.len() + n > limit {
                    return Ok(Line::TooLong);
                }
                line.extend_from_slice(available);
                reader.consume(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn lines_limits_and_eof() {
        let data: &[u8] = b"one\r\ntwo\n\nthree-is-long\nrest";
        let mut r = BufReader::with_capacity(4, data);
        assert_eq!(
            read_line(&mut r, 8).await.unwrap(),
            Line::Complete(b"one".to_vec())
        );
        assert_eq!(
            read_line(&mut r, 8).await.unwrap(),
            Line::Complete(b"two".to_vec())
        );
        assert_eq!(
            read_line(&mut r, 8).await.unwrap(),
            Line::Complete(Vec::new())
        );
        assert_eq!(read_line(&mut r, 8).await.unwrap(), Line::TooLong);
        let mut r = BufReader::new(&b"tail"[..]);
        assert_eq!(read_line(&mut r, 8).await.unwrap(), Line::Eof);
    }
}
