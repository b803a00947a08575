//! Keyset pagination: `?limit=N&after=CURSOR`, answered with `{items, next}`. A cursor is
//! the sort key of the last item, so pages stay stable while rows are added (no offsets
//! that skip or repeat items) and every page is one index range scan.

use serde::Deserialize;
use utoipa::IntoParams;

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size.
pub const MAX_LIMIT: u32 = 500;

/// Page parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page (1 to 500, default 50).
    #[serde(default, deserialize_with = "limit")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

/// Page parameters of lists ordered by an integer key (newest first).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CounterPage {
    /// Items per page (1 to 500, default 50).
    #[serde(default, deserialize_with = "limit")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub after: Option<i64>,
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

/// Deserializes a page size, refusing 0 and anything over [`MAX_LIMIT`] (a 400 from the
/// query extractor, like any other malformed parameter).
pub fn limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = Option::<u32>::deserialize(d)?;
    match n {
        Some(n) if !(1..=MAX_LIMIT).contains(&n) => {
            Err(serde::de::Error::custom(format!("limit must be 1 to {MAX_LIMIT}, not {n}")))
        }
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_urlencoded_like(q: &str) -> Result<PageQuery, String> {
        let uri: axum::http::Uri = format!("/x?{q}").parse().map_err(|e| format!("{e}"))?;
        axum::extract::Query::<PageQuery>::try_from_uri(&uri).map(|q| q.0).map_err(|e| e.body_text())
    }

    #[test]
    fn a_full_page_names_its_last_key_and_a_short_one_ends() {
        let (items, next) = split(vec![1, 2, 3], 2, |i| i.to_string());
        assert_eq!((items, next), (vec![1, 2], Some("2".to_owned())));
        let (items, next) = split(vec![1, 2], 2, |i| i.to_string());
        assert_eq!((items, next), (vec![1, 2], None));
        let query = |q: &str| serde_urlencoded_like(q);
        assert!(query("limit=0").is_err() && query("limit=501").is_err() && query("limit=x").is_err());
        assert_eq!(query("limit=500").ok().and_then(|p| p.limit), Some(500));
    }
}
