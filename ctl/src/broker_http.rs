//! The broker's HTTP side: `POST /v1/join`, `POST /v1/leave`, `GET /healthz`.
//!
//! A broker is named by its WebSocket URL (`wss://host/ws`); its HTTP
//! endpoints live on the same origin (`https://host`). `CLAUDEMESH_BROKER_URL`
//! replaces every broker URL (a self-hosted broker); it may be given as a
//! `ws(s)://` or an `http(s)://` URL.

use std::time::Duration;

use serde_json::Value;

/// The environment variable that points every mesh at another broker.
pub const BROKER_URL_ENV: &str = "CLAUDEMESH_BROKER_URL";

/// How long an enrollment or leave request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How long `doctor` waits for `/healthz`.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The override from `CLAUDEMESH_BROKER_URL`, if set and not empty.
pub fn broker_override() -> Option<String> {
    std::env::var(BROKER_URL_ENV)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// `ws://h:p/ws` → `http://h:p`, `wss://h/ws` → `https://h`; `http(s)://`
/// URLs keep their scheme. The path, query and fragment are dropped.
pub fn http_origin(url: &str) -> Result<String, String> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        format!("`{url}` is not a URL (expected ws://, wss://, http:// or https://)")
    })?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        other => {
            return Err(format!(
                "`{url}` has scheme `{other}`; a broker URL uses ws://, wss://, http:// or https://"
            ));
        }
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        return Err(format!("`{url}` names no host"));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// What went wrong with a request.
#[derive(Debug)]
pub enum HttpError {
    /// Nothing answered (DNS, connect, TLS, timeout, cut connection).
    Unreachable(String),
    /// The broker answered with an error status; `code` and `message` come
    /// from its `{"error","message"}` body when it has one.
    Status {
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    /// A 2xx answer whose body was not what the protocol says.
    BadAnswer(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "{e}"),
            Self::Status {
                status,
                code,
                message,
            } => {
                write!(f, "HTTP {status}")?;
                if let Some(code) = code {
                    write!(f, " {code}")?;
                }
                if let Some(message) = message {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            Self::BadAnswer(e) => write!(f, "unexpected answer: {e}"),
        }
    }
}

fn is_loopback(origin: &str) -> bool {
    let authority = origin.split_once("://").map_or(origin, |(_, r)| r);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]")
}

fn agent(origin: &str, timeout: Duration) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("claudemesh-ctl/", env!("CARGO_PKG_VERSION")));
    // A proxy from the environment is used for remote brokers (it honours
    // NO_PROXY), never for one on this machine.
    if is_loopback(origin) {
        config = config.proxy(None);
    }
    config.build().into()
}

fn unreachable(origin: &str, e: &ureq::Error) -> HttpError {
    let detail = match e {
        ureq::Error::Timeout(_) => "timed out".to_owned(),
        ureq::Error::HostNotFound => "host not found".to_owned(),
        ureq::Error::ConnectionFailed => "connection refused".to_owned(),
        ureq::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    };
    HttpError::Unreachable(format!("{origin}: {detail}"))
}

fn read_answer(
    origin: &str,
    response: ureq::http::Response<ureq::Body>,
) -> Result<(u16, String), HttpError> {
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .with_config()
        .limit(1024 * 1024)
        .read_to_string()
        .map_err(|e| unreachable(origin, &e))?;
    Ok((status, body))
}

fn error_from(status: u16, body: &str) -> HttpError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let field = |k: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let message = field("message").or_else(|| {
        let t = body.trim();
        (!t.is_empty() && parsed.is_none()).then(|| t.chars().take(200).collect())
    });
    HttpError::Status {
        status,
        code: field("error").or_else(|| field("code")),
        message,
    }
}

/// `POST {origin}{path}` with a JSON body; the 2xx JSON answer.
pub fn post_json(origin: &str, path: &str, body: &Value) -> Result<Value, HttpError> {
    let url = format!("{origin}{path}");
    let text = serde_json::to_string(body).expect("JSON values serialize");
    let response = agent(origin, REQUEST_TIMEOUT)
        .post(&url)
        .header("content-type", "application/json")
        .send(text.as_str())
        .map_err(|e| unreachable(origin, &e))?;
    let (status, body) = read_answer(origin, response)?;
    if !(200..300).contains(&status) {
        return Err(error_from(status, &body));
    }
    if body.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&body).map_err(|e| HttpError::BadAnswer(format!("{url}: {e}")))
}

/// `GET {origin}/healthz`: `Ok(())` on a 2xx.
pub fn healthz(origin: &str) -> Result<(), HttpError> {
    let url = format!("{origin}/healthz");
    let response = agent(origin, HEALTH_TIMEOUT)
        .get(&url)
        .call()
        .map_err(|e| unreachable(origin, &e))?;
    let (status, body) = read_answer(origin, response)?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(error_from(status, &body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_follow_the_websocket_url() {
        assert_eq!(
            http_origin("ws://127.0.0.1:7000/ws").unwrap(),
            "http://127.0.0.1:7000"
        );
        assert_eq!(
            http_origin("wss://mesh.example.com/ws").unwrap(),
            "https://mesh.example.com"
        );
        assert_eq!(
            http_origin("WSS://h:8443/a/b?x#y").unwrap(),
            "https://h:8443"
        );
        assert_eq!(http_origin("https://h").unwrap(), "https://h");
        assert_eq!(http_origin("http://[::1]:9/").unwrap(), "http://[::1]:9");
        assert!(http_origin("ftp://h").is_err());
        assert!(http_origin("h:80").is_err());
        assert!(http_origin("ws:///ws").is_err());
    }

    #[test]
    fn loopback_is_recognised() {
        assert!(is_loopback("http://127.0.0.1:7000"));
        assert!(is_loopback("http://localhost:7000"));
        assert!(is_loopback("http://[::1]:7000"));
        assert!(!is_loopback("https://mesh.example.com"));
    }

    #[test]
    fn error_bodies_give_code_and_message() {
        match error_from(
            403,
            r#"{"error":"revoked","message":"the invite was revoked"}"#,
        ) {
            HttpError::Status {
                status: 403,
                code: Some(c),
                message: Some(m),
            } => assert_eq!(
                (c.as_str(), m.as_str()),
                ("revoked", "the invite was revoked")
            ),
            other => panic!("{other:?}"),
        }
    }
}
