//! What a Docker API request fails with: an HTTP status and dockerd's `{"message": "..."}` body. The
//! docker CLI and docker-py show the message as it is, so it names the parameter, file or image at fault.

use engine::images::ImageError;
use hyper::StatusCode;
use registry::RegistryError;

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub(crate) fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub(crate) fn not_implemented(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_IMPLEMENTED, message)
    }

    /// dockerd's answer for an image it does not have.
    pub(crate) fn no_such_image(name: &str) -> ApiError {
        ApiError::not_found(format!("No such image: {name}"))
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        match e {
            RegistryError::NoSuchImage(name) => ApiError::no_such_image(&name),
            RegistryError::Reference(e) => ApiError::bad_request(e.to_string()),
            e => ApiError::internal(e.to_string()),
        }
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> ApiError {
        match e {
            ImageError::Registry(e) => e.into(),
            ImageError::Reference(e) => ApiError::bad_request(e.to_string()),
            ImageError::NoSuchImage(name) => ApiError::no_such_image(&name),
            ImageError::Other(m) => ApiError::internal(m),
        }
    }
}

impl From<llb::ReferenceError> for ApiError {
    fn from(e: llb::ReferenceError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}
