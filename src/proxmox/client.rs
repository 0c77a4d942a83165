//! A thin Proxmox VE API client on reqwest: the dozen calls a worker provisioner needs.
//!
//! PVE quirks handled here, once: `{"data": …}` envelopes with numbers sent as strings and
//! booleans as 0/1; DELETE parameters in the query string; tasks (UPIDs) polled until they
//! stop, with an early "no such task" tolerated; "VM is locked" and lock timeouts waited out;
//! 595–599 (pveproxy's own failures) reported as "outcome unknown" so callers re-read state
//! instead of repeating a clone; idle connections dropped before pveproxy's 5 s keep-alive.

use std::{collections::BTreeMap, fmt, time::Duration};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Mutex;

use super::tls::{Trust, client_config};

/// How long any single API call may take (pveproxy's own proxy timeout is 30 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(35);

/// Under pveproxy's 5 s idle keep-alive, so a pooled connection is never reused as it closes.
const POOL_IDLE: Duration = Duration::from_secs(3);

/// A secret that never shows in logs or Debug output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How headroom authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `USER@REALM!ID=SECRET`, sent as `Authorization: PVEAPIToken=…` (no CSRF needed).
    Token(Secret),
    /// A user and password, exchanged for a 2-hour ticket and a CSRF token.
    Ticket { user: String, password: Secret },
}

#[derive(Debug, thiserror::Error)]
pub enum PveError {
    #[error("cannot reach PVE: {0}")]
    Connect(String),
    #[error("PVE answered {status} (proxy failure): outcome unknown, read the state again: {message}")]
    Unknown { status: u16, message: String },
    #[error("PVE refused the credentials ({status})")]
    Auth { status: u16 },
    #[error("PVE {status}: {message}{}", fmt_errors(.errors))]
    Api {
        status: u16,
        message: String,
        errors: BTreeMap<String, String>,
    },
    #[error("PVE task {upid} failed: {exitstatus}")]
    Task { upid: String, exitstatus: String },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("unexpected PVE answer: {0}")]
    Decode(String),
    #[error(transparent)]
    Tls(#[from] super::tls::PveTlsError),
}

fn fmt_errors(errors: &BTreeMap<String, String>) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(
            " ({})",
            errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

impl PveError {
    /// A lock held by someone else (a config lock, or the storage/VM file lock timing out):
    /// worth waiting for.
    pub fn is_lock(&self) -> bool {
        let text = match self {
            PveError::Api { message, .. } => message.as_str(),
            PveError::Task { exitstatus, .. } => exitstatus.as_str(),
            _ => return false,
        };
        text.contains("VM is locked") || text.contains("got timeout") || text.contains("got no worker upid")
    }

    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            PveError::Connect(_) => "connect",
            PveError::Unknown { .. } => "unknown",
            PveError::Auth { .. } => "auth",
            PveError::Api { .. } if self.is_lock() => "locked",
            PveError::Api { .. } => "api",
            PveError::Task { .. } => "task",
            PveError::Timeout(_) => "timeout",
            PveError::Decode(_) => "decode",
            PveError::Tls(_) => "tls",
        }
    }
}

struct Ticket {
    cookie: Secret,
    csrf: String,
    at: tokio::time::Instant,
}

/// A PVE API client for one endpoint.
pub struct PveClient {
    base: String,
    http: reqwest::Client,
    auth: Auth,
    ticket: Mutex<Option<Ticket>>,
}

impl fmt::Debug for PveClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PveClient")
            .field("base", &self.base)
            .field("auth", &self.auth)
            .finish()
    }
}

/// Accepts a JSON number or a numeric string (PVE sends both for the same field).
pub fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<f64>().ok().map(|f| f as i64),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

/// Accepts 0/1, "0"/"1" and true/false.
pub fn as_bool(v: &Value) -> bool {
    as_i64(v).is_some_and(|n| n != 0)
}

impl PveClient {
    pub fn new(url: &str, trust: &Trust, auth: Auth) -> Result<Self, PveError> {
        let tls = client_config(trust)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .http1_only()
            .pool_idle_timeout(POOL_IDLE)
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| PveError::Connect(e.to_string()))?;
        Ok(Self {
            base: format!("{}/api2/json", url.trim_end_matches('/')),
            http,
            auth,
            ticket: Mutex::new(None),
        })
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, PveError> {
        self.call(Method::GET, path, query, &[]).await
    }

    /// POST with a form body (PVE's booleans must be sent as 1/0 by the caller).
    pub async fn post(&self, path: &str, form: &[(&str, String)]) -> Result<Value, PveError> {
        self.call(Method::POST, path, &[], form).await
    }

    /// PUT with a form body: PVE's synchronous writes (`/qemu/{vmid}/config` among them).
    pub async fn put(&self, path: &str, form: &[(&str, String)]) -> Result<Value, PveError> {
        self.call(Method::PUT, path, &[], form).await
    }

    /// DELETE with parameters in the query string (a body is refused with 501).
    pub async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<Value, PveError> {
        self.call(Method::DELETE, path, query, &[]).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        form: &[(&str, String)],
    ) -> Result<Value, PveError> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.http.request(method.clone(), &url).query(query);
        if !form.is_empty() {
            request = request.form(form);
        }
        request = match &self.auth {
            Auth::Token(token) => request.header("Authorization", format!("PVEAPIToken={}", token.0)),
            Auth::Ticket { .. } => {
                let (cookie, csrf) = self.ticket().await?;
                let request = request.header("Cookie", format!("PVEAuthCookie={cookie}"));
                if method == Method::GET {
                    request
                } else {
                    request.header("CSRFPreventionToken", csrf)
                }
            }
        };
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                PveError::Timeout(format!("{method} {path}"))
            } else {
                PveError::Connect(error_chain(&e))
            }
        })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        decode(method.as_str(), path, status, body)
    }

    /// A valid ticket, logging in (again) when there is none or it is near its 2-hour end.
    async fn ticket(&self) -> Result<(String, String), PveError> {
        let Auth::Ticket { user, password } = &self.auth else {
            unreachable!("ticket() only for ticket auth")
        };
        let mut slot = self.ticket.lock().await;
        if let Some(t) = slot.as_ref()
            && t.at.elapsed() < Duration::from_secs(100 * 60)
        {
            return Ok((t.cookie.0.clone(), t.csrf.clone()));
        }
        let url = format!("{}/access/ticket", self.base);
        let form = [("username", user.clone()), ("password", password.0.clone())];
        let response = self
            .http
            .post(&url)
            .form(&form)
            .send()
            .await
            .map_err(|e| PveError::Connect(error_chain(&e)))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let data = decode("POST", "/access/ticket", status, body)?;
        let field = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_owned);
        let (Some(cookie), Some(csrf)) = (field("ticket"), field("CSRFPreventionToken")) else {
            return Err(PveError::Decode(
                "login answer without ticket and CSRFPreventionToken".into(),
            ));
        };
        *slot = Some(Ticket {
            cookie: Secret(cookie.clone()),
            csrf: csrf.clone(),
            at: tokio::time::Instant::now(),
        });
        Ok((cookie, csrf))
    }

    /// Waits for a task to stop; OK and `WARNINGS: n` are success.
    pub async fn wait_task(&self, upid: &str, timeout: Duration) -> Result<(), PveError> {
        let node = upid
            .split(':')
            .nth(1)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| PveError::Decode(format!("not a UPID: {upid}")))?;
        let path = format!("/nodes/{node}/tasks/{}/status", urlencode(upid));
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(250);
        loop {
            match self.get(&path, &[]).await {
                Ok(status) => {
                    if status.get("status").and_then(Value::as_str) == Some("stopped") {
                        let exit = status
                            .get("exitstatus")
                            .and_then(Value::as_str)
                            .unwrap_or("unknown")
                            .to_owned();
                        return if exit == "OK" || exit.starts_with("WARNINGS") {
                            Ok(())
                        } else {
                            Err(PveError::Task {
                                upid: upid.to_owned(),
                                exitstatus: exit,
                            })
                        };
                    }
                }
                // The task log may not be visible yet right after the task starts.
                Err(PveError::Api { status: 400, .. }) | Err(PveError::Api { status: 500, .. })
                    if started.elapsed() < Duration::from_secs(10) => {}
                Err(PveError::Unknown { .. }) | Err(PveError::Connect(_)) => {}
                Err(e) => return Err(e),
            }
            if started.elapsed() >= timeout {
                return Err(PveError::Timeout(format!("task {upid}")));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Starts a task with `post` and waits for it; a task answered with no UPID is done.
    pub async fn run_task(
        &self,
        path: &str,
        form: &[(&str, String)],
        timeout: Duration,
    ) -> Result<(), PveError> {
        match self.post(path, form).await? {
            Value::String(upid) if upid.starts_with("UPID:") => self.wait_task(&upid, timeout).await,
            _ => Ok(()),
        }
    }
}

/// Retries `op` while PVE reports a lock (config lock, storage or file lock timeout), with
/// backoff, for up to `patience`.
pub async fn waiting_out_locks<T, F, Fut>(patience: Duration, mut op: F) -> Result<T, PveError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PveError>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        match op().await {
            Err(e) if e.is_lock() && started.elapsed() + delay < patience => {
                tracing::info!(error = %e, ?delay, "PVE lock held; waiting");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

/// A PVE answer: `data` on success, else the error PVE's status and body describe.
pub fn decode(method: &str, path: &str, status: StatusCode, body: Value) -> Result<Value, PveError> {
    let code = status.as_u16();
    if status.is_success() {
        return Ok(body.get("data").cloned().unwrap_or(Value::Null));
    }
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .map(|m| m.trim().to_owned())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let message = format!("{method} {path}: {message}");
    match code {
        401 => Err(PveError::Auth { status: code }),
        595..=599 => Err(PveError::Unknown {
            status: code,
            message,
        }),
        _ => {
            let errors = body
                .get("errors")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                        .collect()
                })
                .unwrap_or_default();
            Err(PveError::Api {
                status: code,
                message,
                errors,
            })
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Percent-encodes a path segment (UPIDs contain `:` `@` `!`).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// PVE's `sshkeys` format: the keys joined by newlines, percent-encoded with `%20` for
/// spaces (never `+`); the form encoder then encodes this once more, as PVE expects.
pub fn encode_ssh_keys(keys: &[String]) -> String {
    urlencode(&keys.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_numbers_and_booleans() {
        assert_eq!(as_i64(&Value::from("32768")), Some(32768));
        assert_eq!(as_i64(&Value::from(4)), Some(4));
        assert_eq!(as_i64(&Value::from("x")), None);
        assert!(as_bool(&Value::from(1)) && as_bool(&Value::from("1")) && as_bool(&Value::from(true)));
        assert!(!as_bool(&Value::from(0)) && !as_bool(&Value::Null));
    }

    #[test]
    fn ssh_keys_use_percent_20_and_encode_plus_slash_and_newline() {
        let keys = vec![
            "ssh-ed25519 AAAA+b/c= ops@host".to_owned(),
            "ssh-rsa BBB= x".to_owned(),
        ];
        assert_eq!(
            encode_ssh_keys(&keys),
            "ssh-ed25519%20AAAA%2Bb%2Fc%3D%20ops%40host%0Assh-rsa%20BBB%3D%20x"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let auth = Auth::Token(Secret::new("u@pve!t=very-secret"));
        assert!(!format!("{auth:?}").contains("very-secret"));
    }

    #[test]
    fn status_codes_map_to_errors() {
        let body = serde_json::json!({"data": null, "message": "VM is locked (backup)\n"});
        let e = decode("POST", "/x", StatusCode::INTERNAL_SERVER_ERROR, body).unwrap_err();
        assert!(e.is_lock(), "{e}");
        let e = decode("GET", "/x", StatusCode::from_u16(596).unwrap(), Value::Null).unwrap_err();
        assert!(matches!(e, PveError::Unknown { status: 596, .. }));
        let e = decode("GET", "/x", StatusCode::UNAUTHORIZED, Value::Null).unwrap_err();
        assert!(matches!(e, PveError::Auth { .. }));
        let body = serde_json::json!({"data": null, "errors": {"vmid": "VM 207 already exists"}});
        let e = decode("GET", "/cluster/nextid", StatusCode::BAD_REQUEST, body).unwrap_err();
        assert!(e.to_string().contains("vmid: VM 207 already exists"), "{e}");
        assert_eq!(
            decode("GET", "/x", StatusCode::OK, serde_json::json!({"data": "7"})).unwrap(),
            "7"
        );
    }
}
