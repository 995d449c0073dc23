//! Errors of the Abiquo client. Each variant says what the operator can do about it.

use crate::abiquo::model::ErrorsBody;

/// Why a request to the API did not give the answer we wanted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an Abiquo error (`errors` body), e.g. `VM-4`.
    #[error("{}", api_text(.status, .code, .message))]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// 401: no, wrong or expired credentials.
    #[error("authentication refused (401): {message}")]
    Unauthorized { message: String },
    /// 403: authenticated, but not allowed to do this.
    #[error("forbidden (403): {}", api_text(&403, .code, .message))]
    Forbidden { code: String, message: String },
    /// The API could not be reached (connection refused, DNS, TLS...).
    #[error("cannot reach the API at {url}: {detail}")]
    Transport { url: String, detail: String },
    /// No answer within the request timeout.
    #[error("no answer from {url} within {secs}s")]
    Timeout { url: String, secs: u64 },
    /// The answer could not be understood.
    #[error("unexpected answer ({context}): {detail}")]
    Decode { context: String, detail: String },
    /// A mutation was sent but its answer was lost, and reconciliation could not tell whether
    /// the API processed it.
    #[error("the answer to {context} was lost and the outcome could not be established")]
    AnswerLost { context: String },
    /// A link we must follow is missing (we never build resource URLs by hand).
    #[error("the API did not give a `{rel}` link on {on}")]
    NoLink { rel: String, on: String },
    /// Bad client configuration (endpoint, CA certificate...).
    #[error("{0}")]
    Config(String),
    /// A link (or redirect) points outside the origins the credentials may go to.
    #[error("{}", foreign_text(.link, .endpoint, *.downgrade))]
    ForeignLink {
        link: String,
        endpoint: String,
        downgrade: bool,
    },
    /// The server's TLS certificate was not accepted; retrying cannot help.
    #[error(
        "the TLS certificate of {url} is not trusted ({detail}); pass --ca-cert FILE with \
         your CA or the server's own certificate, or --insecure to skip the check"
    )]
    Tls { url: String, detail: String },
    /// The TLS handshake failed for another reason (often: the endpoint is not https).
    #[error("TLS handshake with {url} failed ({detail}); is the endpoint's scheme right?")]
    TlsHandshake { url: String, detail: String },
    /// An answer larger than the configured cap; it was not read to the end.
    #[error(
        "the answer from {url} is larger than {limit} (raise --max-response-size if the \
         API really sends that much)"
    )]
    TooLarge { url: String, limit: String },
    /// A redirect the client would not follow (another origin, or too many hops).
    #[error("{url} redirects ({status}) to {location}, which is not followed{}", redirect_hint(*.foreign))]
    Redirected {
        url: String,
        status: u16,
        location: String,
        foreign: bool,
    },
    /// A request that kept failing until its attempts or its time budget ran out.
    #[error("{last} (gave up after {attempts} attempts in {}s)", .elapsed_ms / 1000)]
    Exhausted {
        attempts: u32,
        elapsed_ms: u64,
        last: Box<ClientError>,
    },
}

fn foreign_text(link: &str, endpoint: &str, downgrade: bool) -> String {
    if downgrade {
        format!(
            "refused a link to {link}: it steps down from https to http (the endpoint is \
             {endpoint}); credentials never travel in clear text"
        )
    } else {
        format!(
            "refused a link to {link}: it is not the endpoint's origin {endpoint} \
             (credentials stay on the endpoint; --allow-origin {link} trusts it)"
        )
    }
}

fn redirect_hint(foreign: bool) -> &'static str {
    if foreign {
        ": credentials stay on the endpoint's origin (set the endpoint to the final URL, or \
         --allow-origin)"
    } else {
        " (too many redirects)"
    }
}

fn api_text(status: &u16, code: &str, message: &str) -> String {
    match (code.is_empty(), message.is_empty()) {
        (false, false) => format!("{code}: {message}"),
        (false, true) => code.to_owned(),
        (true, false) => format!("HTTP {status}: {message}"),
        (true, true) => format!("HTTP {status}"),
    }
}

impl ClientError {
    /// Builds the error for a non-success HTTP answer, parsing an Abiquo `errors` body when
    /// there is one (whatever its content type), else keeping a short excerpt of the body.
    pub fn from_answer(status: u16, body: &[u8]) -> ClientError {
        let (code, message) = parse_errors_body(body);
        match status {
            401 => ClientError::Unauthorized {
                message: if message.is_empty() {
                    "invalid or missing credentials".to_owned()
                } else if code.is_empty() {
                    message
                } else {
                    format!("{code}: {message}")
                },
            },
            403 => ClientError::Forbidden { code, message },
            _ => ClientError::Api {
                status,
                code,
                message,
            },
        }
    }

    /// The Abiquo error code, if the API gave one.
    pub fn code(&self) -> Option<&str> {
        match self.root() {
            ClientError::Api { code, .. } | ClientError::Forbidden { code, .. }
                if !code.is_empty() =>
            {
                Some(code)
            }
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.root() {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Unauthorized { .. } => Some(401),
            ClientError::Forbidden { .. } => Some(403),
            _ => None,
        }
    }

    /// Errors after which the whole run cannot go on (no point trying other VMs).
    pub fn is_fatal_for_run(&self) -> bool {
        matches!(
            self,
            ClientError::Unauthorized { .. }
                | ClientError::Config(_)
                | ClientError::Tls { .. }
                | ClientError::TlsHandshake { .. }
        ) || matches!(self.status(), Some(406 | 415))
    }

    /// The error behind retries, if this one only says they ran out.
    pub fn root(&self) -> &ClientError {
        match self {
            ClientError::Exhausted { last, .. } => last.root(),
            other => other,
        }
    }

    /// The API refused because the VM is busy with another operation. Abiquo 2.0 answers
    /// VM-11 for a LOCKED VM; later versions may use VM-2 or ASYNC-TASK-2.
    pub fn is_vm_busy(&self) -> bool {
        matches!(self.code(), Some("VM-2" | "VM-11" | "ASYNC-TASK-2"))
    }

    /// The API refused the transition from the VM's current state (VM-4), or a reset of a VM
    /// that is not ON (VM-26): the state the request was decided on is not the VM's now.
    pub fn is_state_refusal(&self) -> bool {
        matches!(self.code(), Some("VM-4" | "VM-26"))
    }
}

/// `(code, message)` of the first entry of an `errors` body, or `("", excerpt)` when the body is
/// not one (an HTML page from a proxy, for instance).
fn parse_errors_body(body: &[u8]) -> (String, String) {
    if let Ok(errors) = serde_json::from_slice::<ErrorsBody>(body)
        && let Some(first) = errors.collection.first()
    {
        let mut message = first.message.clone();
        if errors.collection.len() > 1 {
            let more: Vec<String> = errors.collection[1..]
                .iter()
                .map(ToString::to_string)
                .collect();
            message = format!("{message} (also: {})", more.join("; "));
        }
        return (first.code.clone(), message);
    }
    (String::new(), excerpt(body))
}

/// First line of a body, trimmed to a readable length.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line = line.trim();
    if line.chars().count() > 120 {
        let cut: String = line.chars().take(120).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_body_is_shown_as_code_and_message() {
        let body = br#"{"collection":[{"code":"VM-4","message":"The virtual machine cannot change to the required state"}]}"#;
        let e = ClientError::from_answer(409, body);
        assert_eq!(
            e.to_string(),
            "VM-4: The virtual machine cannot change to the required state"
        );
        assert_eq!(e.code(), Some("VM-4"));
        assert_eq!(e.status(), Some(409));
    }

    #[test]
    fn several_errors_are_all_kept() {
        let body = br#"{"collection":[{"code":"A-1","message":"first"},{"code":"B-2","message":"second"}]}"#;
        let e = ClientError::from_answer(400, body);
        assert_eq!(e.to_string(), "A-1: first (also: B-2: second)");
    }

    #[test]
    fn non_abiquo_body_falls_back_to_an_excerpt() {
        let e = ClientError::from_answer(502, b"<html>\n<h1>Bad Gateway</h1></html>");
        assert_eq!(e.to_string(), "HTTP 502: <html>");
        assert_eq!(e.code(), None);
    }

    #[test]
    fn auth_statuses_get_their_own_variants() {
        let e = ClientError::from_answer(
            401,
            br#"{"collection":[{"code":"GEN-5","message":"Invalid credentials"}]}"#,
        );
        assert!(matches!(e, ClientError::Unauthorized { .. }));
        assert!(e.is_fatal_for_run());
        assert!(e.to_string().contains("GEN-5: Invalid credentials"));
        let e = ClientError::from_answer(
            403,
            br#"{"collection":[{"code":"GEN-4","message":"Not enough permissions"}]}"#,
        );
        assert_eq!(
            e.to_string(),
            "forbidden (403): GEN-4: Not enough permissions"
        );
        assert!(!e.is_fatal_for_run());
    }

    #[test]
    fn busy_codes_are_recognised() {
        for code in ["VM-2", "VM-11", "ASYNC-TASK-2"] {
            let e = ClientError::Api {
                status: 409,
                code: code.into(),
                message: String::new(),
            };
            assert!(e.is_vm_busy(), "{code}");
        }
        let e = ClientError::Api {
            status: 409,
            code: "VM-4".into(),
            message: String::new(),
        };
        assert!(!e.is_vm_busy());
    }
}
