//! A refusal as the simulated API answers it: HTTP status, Abiquo code and message.

use crate::abiquo::codes::Code;
use axum::http::StatusCode;

/// A refusal as the API answers it: status + errors body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    /// The code with a message of the answer's own (what was wrong with the request).
    pub fn detailed(code: Code, message: &str) -> Self {
        Self {
            status: status_of(code),
            code: code.code().to_owned(),
            message: message.to_owned(),
        }
    }
}

impl From<Code> for ApiError {
    fn from(code: Code) -> Self {
        ApiError::detailed(code, code.message())
    }
}

/// The HTTP status the API answers a code with (2.0 mapping where it exists, §5).
pub(crate) fn status_of(code: Code) -> StatusCode {
    match code {
        Code::Vm1 | Code::Vdc0 | Code::Vapp0 | Code::Task1 | Code::NotFound => {
            StatusCode::NOT_FOUND
        }
        Code::Vm2
        | Code::Vm4
        | Code::Vm6
        | Code::Vm11
        | Code::Vm26
        | Code::Vm120
        | Code::Task2
        | Code::AsyncTask2 => StatusCode::CONFLICT,
        Code::Vm10 | Code::BadRequest => StatusCode::BAD_REQUEST,
        Code::Gen4 => StatusCode::FORBIDDEN,
        Code::Gen5 | Code::Unauthorized => StatusCode::UNAUTHORIZED,
        Code::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
        Code::UnsupportedMediaType | Code::UnsupportedMediaTypeVersion => {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        Code::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_answers_with_the_status_its_number_names() {
        // HTTP-flavoured codes spell their status: the mapping must not contradict them.
        for code in Code::ALL {
            if let Some(n) = code
                .code()
                .split('-')
                .next()
                .and_then(|n| n.parse::<u16>().ok())
            {
                assert_eq!(status_of(code).as_u16(), n, "{code}");
            }
        }
        assert_eq!(ApiError::from(Code::Vm4).status, StatusCode::CONFLICT);
    }
}
