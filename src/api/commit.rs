//! Committing a planned configuration change, and turning the engine's refusals into API
//! errors (the journal's failure is logged, never shown).

use serde_json::{Value, json};

use super::{ApiError, Context, ErrorCode};
use crate::config::model::Store;
use crate::config::plan::{self, ConfigChangeError};

pub(super) fn change_error(error: ConfigChangeError) -> ApiError {
    let code = match &error {
        ConfigChangeError::NoSuchNode(_)
        | ConfigChangeError::NoSuchGroup(_)
        | ConfigChangeError::NoSuchAccount { .. } => ErrorCode::NotFound,
        ConfigChangeError::NameInUse { .. } | ConfigChangeError::AccountExists { .. } => {
            ErrorCode::Conflict
        }
        // The journal's failure (a file path, an OS error) is for the log only.
        ConfigChangeError::JournalUnavailable(_) => {
            return ApiError::internal(
                ErrorCode::Unavailable,
                "the configuration journal is unavailable, nothing was changed",
                &error,
            );
        }
        _ => ErrorCode::InvalidChange,
    };
    // Validation errors describe the request (names, values, noderanges); their causes are
    // parse errors of the same input, safe and useful to show.
    ApiError::new(code, crate::error::Chain(&error).to_string())
}

/// Commit a plan; returns the warnings as messages.
pub(super) async fn commit(
    context: &Context,
    planner: impl FnOnce(
        &Store,
        &crate::config::secrets::MasterKey,
    ) -> Result<plan::Plan, ConfigChangeError>,
) -> Result<Vec<Value>, ApiError> {
    let receipt = context.config.commit(planner).await.map_err(change_error)?;
    Ok(receipt
        .warnings
        .into_iter()
        .map(|warning| json!({"warning": warning}))
        .collect())
}
