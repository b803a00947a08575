//! Exit codes, so scripts can tell "not there" from "not allowed" from "the server is
//! down" without parsing messages. Kept small and stable; the help text lists them.

use crate::client::ApiError;

/// Shown under `mota --help`.
pub const HELP: &str = "\
Exit status:
  0  done
  1  failed (a local check failed, a file could not be read, ...)
  2  usage error
  3  not found
  4  not authenticated, or the token's role may not do that
  5  refused: invalid, conflicting or too large
  6  backend unreachable or failing (5xx)
  7  `rollout watch`: the rollout stopped without completing (paused, aborted, rolled back)";

/// The rollout stopped short of completing (`rollout watch`).
#[derive(Debug, thiserror::Error)]
#[error("rollout {id} is {state}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
pub struct Stopped {
    /// Rollout id.
    pub id: i64,
    /// Its state.
    pub state: String,
    /// Why.
    pub reason: Option<String>,
}

/// The exit code for `err`.
pub fn code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.downcast_ref::<Stopped>().is_some() {
            return 7;
        }
        if let Some(api) = cause.downcast_ref::<ApiError>() {
            return match api.status() {
                Some(404) => 3,
                Some(401 | 403) => 4,
                Some(s) if s >= 500 => 6,
                Some(_) => 5,
                None => match api {
                    ApiError::Unreachable { .. } => 6,
                    _ => 1,
                },
            };
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16) -> anyhow::Error {
        ApiError::Refused { status, code: "x".into(), message: "m".into(), hint: None }.into()
    }

    #[test]
    fn each_kind_of_failure_has_its_code_even_with_context() {
        assert_eq!(code(&refused(404).context("showing rollout 9")), 3);
        assert_eq!(code(&refused(401)), 4);
        assert_eq!(code(&refused(403)), 4);
        assert_eq!(code(&refused(409)), 5);
        assert_eq!(code(&refused(422)), 5);
        assert_eq!(code(&refused(503)), 6);
        assert_eq!(code(&ApiError::Unreachable { url: "u".into(), detail: "d".into() }.into()), 6);
        assert_eq!(code(&Stopped { id: 1, state: "paused".into(), reason: None }.into()), 7);
        assert_eq!(code(&anyhow::anyhow!("reading model.tflite")), 1);
    }
}
