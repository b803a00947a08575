//! Keyset pagination: `?limit=N&after=CURSOR`, answered with `{items, next}`. A cursor is
//! the sort key of the last item, so pages stay stable while rows are added (no offsets
//! that skip or repeat items) and every page is one index range scan.

use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::ApiError;

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size.
pub const MAX_LIMIT: u32 = 500;

/// Page parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page (1 to 500, default 50).
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

impl PageQuery {
    /// The page size, checked.
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n @ 1..=MAX_LIMIT) => Ok(n),
            Some(n) => Err(ApiError::bad_request("bad_query", format!("limit must be 1 to {MAX_LIMIT}, not {n}"))),
        }
    }

    /// The cursor as an integer key.
    pub fn after_i64(&self) -> Result<Option<i64>, ApiError> {
        self.after
            .as_deref()
            .map(|a| a.parse().map_err(|_| ApiError::bad_request("bad_query", format!("bad cursor {a:?}"))))
            .transpose()
    }
}

/// `items` cut to `limit`, and the cursor of the next page if there is one: queries fetch
/// `limit + 1` rows to know.
pub fn split<T>(mut items: Vec<T>, limit: u32, key: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    if items.len() > limit as usize {
        items.truncate(limit as usize);
        let next = items.last().map(key);
        (items, next)
    } else {
        (items, None)
    }
}

/// Declares a page type (utoipa needs a concrete schema per item type).
macro_rules! page {
    ($name:ident, $item:ty) => {
        #[doc = concat!("A page of ", stringify!($item), ".")]
        #[derive(Debug, serde::Serialize, utoipa::ToSchema)]
        pub struct $name {
            /// The items.
            pub items: Vec<$item>,
            /// Cursor of the next page (`after`), absent on the last.
            pub next: Option<String>,
        }
    };
}
pub(crate) use page;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_page_names_its_last_key_and_a_short_one_ends() {
        let (items, next) = split(vec![1, 2, 3], 2, |i| i.to_string());
        assert_eq!((items, next), (vec![1, 2], Some("2".to_owned())));
        let (items, next) = split(vec![1, 2], 2, |i| i.to_string());
        assert_eq!((items, next), (vec![1, 2], None));
        let bad = PageQuery { limit: Some(0), after: Some("x".into()) };
        assert!(bad.limit().is_err() && bad.after_i64().is_err());
    }
}
