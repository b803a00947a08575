//! Extractors whose rejections use the API's error body, so a malformed path, query or
//! JSON body gets `{"error": {...}}` like every other error instead of axum's plain text.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::{Json, extract::rejection::JsonRejection};
use serde::de::DeserializeOwned;

use crate::auth::ApiError;

/// `Query<T>` with API errors (400).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(t)) => Ok(Self(t)),
            Err(e) => Err(ApiError::bad_request("bad_query", e.body_text())),
        }
    }
}

/// `Path<T>` with API errors (400).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(Self(t)),
            Err(e) => Err(ApiError::bad_request("bad_path", e.body_text())),
        }
    }
}

/// `Json<T>` with API errors (415 without a JSON content type, 413 over the limit, else 400).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(t)) => Ok(Self(t)),
            Err(e) => {
                let code = match &e {
                    JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
                    JsonRejection::BytesRejection(_) => "body",
                    _ => "bad_json",
                };
                Err(ApiError::new(e.status(), code, e.body_text()))
            }
        }
    }
}
